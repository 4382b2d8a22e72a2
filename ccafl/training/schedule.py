"""Which loss terms are active in an epoch: paper Eq. 20 plus the ablation switches."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActiveLosses:
    intra1: bool  # L_intra1, Eq. 7 (always in stage 2: part of the baseline)
    intra2: bool  # L_intra2, Eq. 8 (ICDL)
    i2tce: bool  # L_i2tce, Eq. 9 in stage 2, Eq. 15 in stage 3
    ipcl: bool  # L_IPCL, Eq. 14 (always in stage 3: part of the baseline)
    gid: bool  # L_GID, Eq. 17 (every epoch; trains the classifier only)
    ical: bool  # L_ICAL, Eq. 18

    @property
    def stage(self) -> str:
        return "intra" if self.intra1 else "inter"


def active_losses(epoch: int, train: dict) -> ActiveLosses:
    """Eq. 20: epochs <= E_intra: L_intra + L_GID; later L_inter + L_GID; from E_adv + L_ICAL.

    ``epoch`` is 1-based; ``train`` is the config's ``train`` section.
    """
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got {epoch}")
    switches = train["losses"]
    intra = epoch <= train["intra_epochs"]
    return ActiveLosses(
        intra1=intra,
        intra2=intra and switches["intra2"],
        i2tce=switches["i2tce"],
        ipcl=not intra,
        gid=True,
        ical=(not intra) and switches["ical"] and epoch >= train["adv_start"],
    )

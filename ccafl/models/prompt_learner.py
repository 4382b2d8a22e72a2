"""Learnable identity prompts of CCAFL stage 1 (paper section III-B, Eq. 1-3).

Every global ICS ID g gets its own sentence "a photo of [X]_1 ... [X]_M person." in which the
M word embeddings [X] are free parameters (CoOp-style context, one per class as in CLIP-ReID).
The rest of the sentence is fixed: its token embeddings are taken once from the CLIP
``token_embedding`` of the tokenised template, so only the M vectors per ID ever train. The
frozen `PromptTextEncoder` turns the spliced embeddings into the text feature t_g.
"""

from __future__ import annotations

from collections.abc import Callable

import open_clip
import torch
from torch import Tensor, nn

from ccafl.models.backbone import PromptTextEncoder

__all__ = ["DEFAULT_TEMPLATE", "DOMAIN_TEMPLATE", "DomainPromptLearner", "PromptLearner"]

DEFAULT_TEMPLATE = "a photo of {} person."
_PLACEHOLDER = "X"


def _eot_index(tokens: Tensor, clip_model: nn.Module) -> int:
    """Position the text tower pools from, following the model's own pooling rule."""
    text = getattr(clip_model, "text", clip_model)
    pool = getattr(text, "text_pool_type", getattr(text, "pool_type", "argmax"))
    if pool == "eos":
        eos = getattr(text, "text_eos_id", getattr(text, "eos_id", None))
        return int((tokens == eos).int().argmax())
    if pool == "last":
        return tokens.shape[-1] - 1
    if pool == "first":
        return 0
    return int(tokens.argmax())  # CLIP BPE: EOT has the highest id


class PromptLearner(nn.Module):
    """M learnable context vectors per class spliced into a fixed template.

    Args:
        clip_model: the open_clip CLIP model whose ``token_embedding`` embeds the template
            (read once; no reference is kept, so no gradient can reach it).
        n_classes: number of global ICS IDs N_G.
        n_tokens: M, learnable tokens per class (paper: 5).
        template: sentence with one ``{}`` where the M tokens go.
        tokenizer: callable ``texts -> (N, context_length)`` ids; default open_clip's CLIP BPE
            at the model's context length (pass ``open_clip.get_tokenizer(name)`` for others).
        init_std: the context starts as N(0, init_std^2), like CoOp's random init.

    ``forward(labels) -> (prompt_embeddings (B, L, W), eot_indices (B,))``, the input of
    `PromptTextEncoder`. The state dict holds only ``ctx`` (the learned tokens).
    """

    def __init__(
        self,
        clip_model: nn.Module,
        n_classes: int,
        n_tokens: int = 5,
        template: str = DEFAULT_TEMPLATE,
        tokenizer: Callable[[list[str]], Tensor] | None = None,
        init_std: float = 0.02,
    ):
        super().__init__()
        if n_classes < 1 or n_tokens < 1:
            raise ValueError(f"need n_classes >= 1 and n_tokens >= 1, got {n_classes}, {n_tokens}")
        if template.count("{}") != 1:
            raise ValueError(f"template must contain exactly one '{{}}': {template!r}")
        text = getattr(clip_model, "text", clip_model)
        embedding: nn.Embedding = text.token_embedding
        context_length = int(text.positional_embedding.shape[0])
        if tokenizer is None:

            def tokenizer(texts: list[str]) -> Tensor:
                return open_clip.tokenize(texts, context_length=context_length)

        prefix_text = template.split("{}")[0].strip()
        sentence = template.format(" ".join([_PLACEHOLDER] * n_tokens))
        tokens = tokenizer([sentence, prefix_text, _PLACEHOLDER]).to(embedding.weight.device)
        if tokens.shape[1] != context_length:
            raise ValueError(f"tokenizer length {tokens.shape[1]} != context {context_length}")
        full, prefix_only, placeholder = tokens
        n_prefix = _eot_index(prefix_only, clip_model)  # SOT + prefix words
        eot = _eot_index(full, clip_model)
        ctx_slice = full[n_prefix : n_prefix + n_tokens]
        if eot <= n_prefix + n_tokens or not bool((ctx_slice == placeholder[1]).all()):
            raise ValueError(
                f"template {template!r} with {n_tokens} tokens does not fit the tokenizer "
                f"(context length {context_length}) as '<prefix> X...X <suffix>'"
            )

        with torch.no_grad():
            embedded = embedding(full[None]).detach()
        self.n_classes = int(n_classes)
        self.n_tokens = int(n_tokens)
        self.template = template
        self.register_buffer("token_prefix", embedded[:, :n_prefix].clone(), persistent=False)
        self.register_buffer(
            "token_suffix", embedded[:, n_prefix + n_tokens :].clone(), persistent=False
        )
        self.register_buffer("eot_index", torch.tensor(eot), persistent=False)
        width = embedded.shape[-1]
        self.ctx = nn.Parameter(
            torch.empty(n_classes, n_tokens, width, dtype=embedded.dtype, device=embedded.device)
        )
        nn.init.normal_(self.ctx, std=init_std)

    def forward(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        labels = labels.to(self.ctx.device).long()
        batch = labels.shape[0]
        prompts = torch.cat(
            [
                self.token_prefix.expand(batch, -1, -1),
                self.ctx[labels],
                self.token_suffix.expand(batch, -1, -1),
            ],
            dim=1,
        )
        return prompts, self.eot_index.expand(batch).clone()

    @torch.no_grad()
    def encode_all(self, text_encoder: PromptTextEncoder, batch_size: int = 256) -> Tensor:
        """Text features t_g of every class, (n_classes, embed_dim), in class order.

        Without gradients: these are the fixed targets of stages 2 and 3.
        """
        labels = torch.arange(self.n_classes, device=self.ctx.device)
        chunks = [text_encoder(*self(chunk)) for chunk in labels.split(batch_size)]
        return torch.cat(chunks, dim=0)


DOMAIN_TEMPLATE = "a photo of {} person from {} dataset."


class DomainPromptLearner(nn.Module):
    """CLIP-FGDI's domain-relevant prompts: "a photo of [X]_1..[X]_M person from [D] dataset."

    The M identity tokens are a trained `PromptLearner`'s, detached (they stay the
    domain-invariant ones); the one token [D] per source domain is the only parameter
    (``ctx``, (n_domains, 1, width)). Trained with the identity SupCon losses, each domain
    token learns what the identities of its dataset share (``../shared/reference/
    clip-fgdi-spec.md`` section 2, stage 2b). The end-of-text position is this template's own.

    ``forward(labels, domains) -> (prompt_embeddings, eot_indices)``, the input of
    `PromptTextEncoder`.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        identity: PromptLearner,
        n_domains: int,
        template: str = DOMAIN_TEMPLATE,
        init_std: float = 0.02,
    ):
        super().__init__()
        if n_domains < 1:
            raise ValueError(f"need n_domains >= 1, got {n_domains}")
        if template.count("{}") != 2:
            raise ValueError(f"template must contain exactly two '{{}}': {template!r}")
        text = getattr(clip_model, "text", clip_model)
        embedding: nn.Embedding = text.token_embedding
        context_length = int(text.positional_embedding.shape[0])
        m = identity.n_tokens
        sentence = template.format(" ".join([_PLACEHOLDER] * m), _PLACEHOLDER)
        prefix_text = template.split("{}")[0].strip()
        tokens = open_clip.tokenize([sentence, prefix_text, _PLACEHOLDER], context_length)
        full, prefix_only, placeholder = tokens.to(embedding.weight.device)
        n_prefix = _eot_index(prefix_only, clip_model)
        eot = _eot_index(full, clip_model)
        slots = [int(i) for i in (full == placeholder[1]).nonzero().flatten()]
        expected = [*range(n_prefix, n_prefix + m)]
        if slots[:m] != expected or len(slots) != m + 1 or slots[m] >= eot:
            raise ValueError(
                f"template {template!r} with {m} identity tokens does not fit the tokenizer as "
                "'<prefix> X...X <middle> D <suffix>'"
            )
        with torch.no_grad():
            embedded = embedding(full[None]).detach()
        self._identity = [identity]  # a list: not a submodule, so its tokens are not ours
        self.n_domains = int(n_domains)
        self.template = template
        self.domain_slot = slots[m]
        self.register_buffer("token_prefix", embedded[:, :n_prefix].clone(), persistent=False)
        self.register_buffer(
            "token_middle", embedded[:, n_prefix + m : self.domain_slot].clone(), persistent=False
        )
        self.register_buffer(
            "token_suffix", embedded[:, self.domain_slot + 1 :].clone(), persistent=False
        )
        self.register_buffer("eot_index", torch.tensor(eot), persistent=False)
        width = embedded.shape[-1]
        self.ctx = nn.Parameter(torch.empty(n_domains, 1, width, dtype=embedded.dtype))
        nn.init.normal_(self.ctx, std=init_std)

    def forward(self, labels: Tensor, domains: Tensor) -> tuple[Tensor, Tensor]:
        labels = labels.to(self.ctx.device).long()
        domains = domains.to(self.ctx.device).long()
        batch = labels.shape[0]
        prompts = torch.cat(
            [
                self.token_prefix.expand(batch, -1, -1),
                self._identity[0].ctx[labels].detach(),
                self.token_middle.expand(batch, -1, -1),
                self.ctx[domains],
                self.token_suffix.expand(batch, -1, -1),
            ],
            dim=1,
        )
        return prompts, self.eot_index.expand(batch).clone()

    @torch.no_grad()
    def encode(
        self,
        text_encoder: PromptTextEncoder,
        labels: Tensor,
        domains: Tensor,
        batch_size: int = 256,
    ) -> Tensor:
        """Text features of (label, domain) pairs, in order, without gradients."""
        chunks = [
            text_encoder(*self(lab, dom))
            for lab, dom in zip(labels.split(batch_size), domains.split(batch_size), strict=True)
        ]
        return torch.cat(chunks, dim=0)

"""Retrieval metrics under the Market-1501 protocol: mAP, mINP and CMC, streamed over queries.

Protocol (also used for DukeMTMC-reID and MSMT17), for every query:

- gallery images with the query's pid *and* camera are removed (same person, same view: too
  easy, and not what cross-camera ReID asks for);
- junk gallery images (pid ``-1``) are removed;
- distractors (pid ``0`` in Market-1501) stay, as negatives;
- a query with no true match left is skipped and counted in ``n_skipped_queries``.

Why there is no sort of the gallery: every metric here depends only on where the query's true
matches fall in the ranking of its valid gallery images, i.e. on how many valid negatives are
closer than each true match. Negatives farther than the hardest true match change nothing. So
per chunk of queries: one comparison against each row's hardest match picks the negatives that
matter (a few thousand of MSMT17's 82,161 gallery images with a usable model), only the few
true matches per query are sorted, and each picked negative is binary-searched among its row's
matches; running counts then give every match's rank. All vectorised over the chunk, no loop
over queries. A useless model (hardest match near the end) only makes the picked set larger.

Ties: a negative at exactly the same distance as a true match is ranked *before* it
(pessimistic). Arbitrary tie order would let collapsed features (all distances equal) score
well; this rule gives them the worst score instead. With continuous features ties do not occur.

Distances from features: cosine distance ``1 - cos(q, g)`` of the L2-normalised features, in
float32. Internally ``-cos`` is ranked, which orders identically without the rounding of
``1 - cos``. Or squared Euclidean distance of the un-normalised features (CLIP-FGDI's test,
``distance="euclidean"``), ranked as ``|g|^2 - 2 q.g``: the query's own norm orders nothing.
The query x gallery matrix is never held whole: query chunks of at most ``chunk_size`` rows
are multiplied against the full gallery (numpy/OpenBLAS on CPU, torch on GPU, where torch's
float32 matmul precision setting applies: TF32 if the caller enabled it).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["DEFAULT_CHUNK_BYTES", "DISTANCES", "cmc_at", "default_chunk_size", "rank_metrics"]

#: How features are compared (config ``eval.distance``).
DISTANCES = ("cosine", "euclidean")

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]

#: Working-set budget per query chunk. With the ~16 bytes the chunk needs per query x gallery
#: entry this gives ~400 query rows at MSMT17 size (82,161 gallery images). Measured there
#: (benchmarks/bench_rank_metrics.py): the call adds 0.85 GiB to the process, the normalised
#: gallery copy (0.63 GiB) included; 2.1 GiB peak RSS in all, with the features and torch.
DEFAULT_CHUNK_BYTES = 512 * 2**20
_BYTES_PER_ENTRY = 16

#: On CPU, do the chunk matmul and the small sort/search with numpy: torch's bundled MKL matmul is
#: markedly slower than numpy's OpenBLAS on AMD CPUs (0.74 s vs 0.46 s for 256 x 82,161 x 2,048
#: on 2 EPYC cores; the matmul dominates the run) and ``np.sort`` is ~4x faster than torch's.
_NUMPY_ON_CPU = True


def excluded_from_gallery(
    query_pid: int, query_camera: object, gallery_pids: np.ndarray, gallery_cameras: np.ndarray
) -> np.ndarray:
    """The protocol's exclusions for one query, as a mask over gallery rows: images of the
    query's pid taken by the query's camera, and junk (pid -1). `rank_metrics` applies the
    same rule vectorised over query chunks; the report and the search commands use this."""
    return ((gallery_pids == query_pid) & (gallery_cameras == query_camera)) | (gallery_pids == -1)


def default_chunk_size(n_gallery: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Query rows per chunk so that one chunk's working set stays within ``budget_bytes``."""
    return int(max(16, min(8192, budget_bytes // (_BYTES_PER_ENTRY * max(1, n_gallery)))))


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _labels(values: ArrayLike, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values
    array = np.asarray(array)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return np.array(array, dtype=np.int64)  # small: always an own, writable copy


def _as_float_tensor(values: ArrayLike) -> torch.Tensor:
    """Shares memory with a float numpy array or tensor where it can (no gallery copy).

    Nothing here writes into the caller's data, so read-only arrays (e.g. arrow-backed) are
    fine and torch's warning about them is silenced.
    """
    if isinstance(values, torch.Tensor):
        tensor = values.detach()
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(np.ascontiguousarray(values))
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    return tensor


class _FeatureDistances:
    """Distance rows, one query chunk at a time: negative cosine similarity, or (``euclidean``)
    the squared Euclidean distance less the query's own squared norm, ``|g|^2 - 2 q.g``, which
    orders each row as the distance does (the dropped term is constant along a row)."""

    def __init__(
        self,
        query_features: ArrayLike,
        gallery_features: ArrayLike,
        device: torch.device,
        chunk_size: int,
        distance: str = "cosine",
    ) -> None:
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        self.device = device
        query = _as_float_tensor(query_features).to(torch.float32)
        gallery = _as_float_tensor(gallery_features).to(torch.float32)
        if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
            raise ValueError(
                f"features must be 2-D with equal widths, got {tuple(query.shape)} and "
                f"{tuple(gallery.shape)}"
            )
        self.query = query
        self.euclidean = distance == "euclidean"
        # A normalised copy of the gallery (0.67 GB at MSMT17 size) saves a division pass over
        # every chunk of distances, ~4% of the run time.
        gallery = gallery.to(device)
        norms = torch.linalg.vector_norm(gallery, dim=1, keepdim=True)
        _require_finite(norms, "gallery_features")  # a NaN or inf anywhere reaches its norm
        if self.euclidean:
            self.gallery = gallery
            self.gallery_sq = norms.square().T  # 1 x n_gallery
        else:
            self.gallery = gallery / norms.clamp_min_(1e-12)
        self.shape = (query.shape[0], gallery.shape[0])
        self.use_numpy = device.type == "cpu" and _NUMPY_ON_CPU
        if self.use_numpy:
            self.gallery_np = self.gallery.numpy()
            self.buffer = np.empty((min(chunk_size, self.shape[0]), self.shape[1]), np.float32)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        query = self.query[start:stop].to(self.device)
        norms = torch.linalg.vector_norm(query, dim=1, keepdim=True)
        _require_finite(norms, "query_features")
        if self.euclidean:
            query = query * -2.0
        else:
            # Negated normalised query: the product is -cos directly, no pass over the result.
            query = query / -norms.clamp_min_(1e-12)
        if self.use_numpy:
            out = self.buffer[: stop - start]
            np.matmul(query.numpy(), self.gallery_np.T, out=out)
            if self.euclidean:
                out += self.gallery_sq.numpy()
            return torch.from_numpy(out)
        if self.euclidean:
            return torch.addmm(self.gallery_sq, query, self.gallery.T)
        return query @ self.gallery.T


class _MatrixDistances:
    """Rows of a caller-supplied distance matrix, copied to the device one chunk at a time."""

    def __init__(self, distmat: ArrayLike, device: torch.device) -> None:
        self.distmat = distmat if isinstance(distmat, torch.Tensor) else np.asarray(distmat)
        if self.distmat.ndim != 2:
            raise ValueError(f"distmat must be 2-D, got shape {tuple(self.distmat.shape)}")
        self.shape = tuple(self.distmat.shape)
        self.device = device

    def rows(self, start: int, stop: int) -> torch.Tensor:
        # A copy: the chunk is modified in place (removed images set to +inf).
        chunk = _as_float_tensor(self.distmat[start:stop]).to(self.device, copy=True)
        _require_finite(chunk, "distmat")
        return chunk


def _require_finite(values: torch.Tensor, name: str) -> None:
    """One pass and no temporaries (torch.isfinite would allocate and take several passes)."""
    if values.numel() == 0:
        return
    low, high = torch.aminmax(values)  # NaN propagates into both
    if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
        raise ValueError(f"{name} must be finite (no NaN or inf)")


class _GalleryIndex:
    """Gallery labels arranged so a query's same-pid images are found without a gallery scan."""

    def __init__(self, g_pids: np.ndarray, g_cams: np.ndarray, device: torch.device) -> None:
        not_junk = np.flatnonzero(g_pids != -1)  # junk is never a match, whatever the query
        by_pid = not_junk[np.argsort(g_pids[not_junk], kind="stable")]
        self.sorted_pids = torch.from_numpy(g_pids[by_pid]).to(device)
        self.sorted_index = torch.from_numpy(by_pid).to(device)
        self.junk = torch.from_numpy(np.flatnonzero(g_pids == -1)).to(device)
        self.pids = torch.from_numpy(g_pids).to(device)
        self.cams = torch.from_numpy(g_cams).to(device)

    def same_pid_pairs(self, q_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query row, gallery column) of every non-junk gallery image sharing the query's pid."""
        low = torch.searchsorted(self.sorted_pids, q_pids)
        high = torch.searchsorted(self.sorted_pids, q_pids, right=True)
        lengths = high - low
        rows = torch.repeat_interleave(torch.arange(len(q_pids), device=q_pids.device), lengths)
        seg_start = torch.cumsum(lengths, 0) - lengths
        offsets = torch.arange(rows.numel(), device=q_pids.device) - seg_start[rows]
        return rows, self.sorted_index[low[rows] + offsets]


def _packed_keys(rows: torch.Tensor, values: torch.Tensor, is_pos: bool) -> torch.Tensor:
    """int64 keys ordered like (row, float32 distance, negatives before true matches)."""
    bits = values.contiguous().view(torch.int32)
    sign = bits >> 31  # 0 or -1
    # Order-preserving int32: flip the magnitude bits of negatives, then shift them up by one
    # so that -0.0 and +0.0 get the same key (they are the same distance).
    ordered = (bits ^ (sign & 0x7FFFFFFF)) - sign
    keys = ordered.to(torch.int64).mul_(2).add_(2**32 + int(is_pos))  # in [0, 2**33)
    return keys.add_(rows, alpha=2**33)


def _match_positions_float32(
    pos_rows: torch.Tensor,
    pos_values: torch.Tensor,
    neg_rows: torch.Tensor,
    neg_values: torch.Tensor,
    pos_start: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Only the few true matches are sorted; each negative candidate is binary-searched among
    them (the row in the key's high bits keeps the search in its own row), and the number of
    negatives ranked before each match is a running count over those landing slots."""
    pos_keys = _packed_keys(pos_rows, pos_values, True)
    neg_keys = _packed_keys(neg_rows, neg_values, False)
    if pos_keys.device.type == "cpu" and _NUMPY_ON_CPU:
        pos_np = np.sort(pos_keys.numpy())
        slot = torch.from_numpy(np.searchsorted(pos_np, neg_keys.numpy()))
        pos_keys = torch.from_numpy(pos_np)
    else:
        pos_keys = torch.sort(pos_keys).values
        slot = torch.searchsorted(pos_keys, neg_keys)
    # slot j: the negative comes right before match j (the hardest match bounds every candidate).
    landed = torch.bincount(slot, minlength=pos_keys.numel())
    landed_upto = torch.cumsum(landed, 0)
    pos_row = pos_keys >> 33
    row_first = pos_start[pos_row]
    negatives_before = landed_upto - (landed_upto[row_first] - landed[row_first])
    kth = torch.arange(pos_keys.numel(), device=pos_keys.device) - row_first
    return pos_row, kth + negatives_before


def _match_positions_any_dtype(
    pos_rows: torch.Tensor,
    pos_values: torch.Tensor,
    neg_rows: torch.Tensor,
    neg_values: torch.Tensor,
    pos_start: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same result for float64 etc. (no bit packing): three stable sorts, last key first."""
    rows = torch.cat([neg_rows, pos_rows])
    values = torch.cat([neg_values, pos_values])
    is_pos = torch.cat([torch.zeros_like(neg_rows), torch.ones_like(pos_rows)])
    order = torch.argsort(is_pos, stable=True)
    order = order[torch.argsort(values[order], stable=True)]
    order = order[torch.argsort(rows[order], stable=True)]
    rows, is_pos = rows[order], is_pos[order].bool()
    n_cand = torch.bincount(rows, minlength=len(pos_start))
    cand_start = torch.cumsum(n_cand, 0) - n_cand
    pos_index = is_pos.nonzero().squeeze(1)
    pos_row = rows[pos_index]
    return pos_row, pos_index - cand_start[pos_row]


def _chunk_stats(
    dist: torch.Tensor, q_pids: torch.Tensor, q_cams: torch.Tensor, gallery: _GalleryIndex
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AP, INP and first-match rank (0-based) of the chunk's queries that have a true match.

    ``dist`` (chunk x gallery, smaller = closer) is overwritten. Vectorised over the chunk:
    true matches come from the pid index (no gallery-wide label comparison); removed images and
    the matches themselves are then set to +inf, so one comparison against each row's hardest
    match leaves exactly the negatives that rank before it.
    """
    dist = dist.contiguous()  # flat views below
    n_rows, device = dist.shape[0], dist.device
    pair_rows, pair_cols = gallery.same_pid_pairs(q_pids)
    same_view = gallery.cams[pair_cols] == q_cams[pair_rows]
    pos_rows, pos_cols = pair_rows[~same_view], pair_cols[~same_view]  # grouped by row
    pos_values = dist[pos_rows, pos_cols]
    dist[pair_rows, pair_cols] = torch.inf
    dist.index_fill_(1, gallery.junk, torch.inf)

    n_pos = torch.bincount(pos_rows, minlength=n_rows)
    pos_start = torch.cumsum(n_pos, 0) - n_pos
    hardest = torch.full((n_rows,), -torch.inf, dtype=dist.dtype, device=device)
    hardest.scatter_reduce_(0, pos_rows, pos_values, reduce="amax")
    # Rows without a true match keep -inf and get no candidates (distances are finite).
    # Flat positions (contiguous, row-major) make the gather a 1-D take and give each row's
    # span by a binary search instead of a division per candidate.
    n_cols = dist.shape[1]
    if device.type == "cpu" and _NUMPY_ON_CPU and dist.dtype in (torch.float32, torch.float64):
        # Single-threaded numpy beats torch's 2 threads here: right after the matmul one of
        # the 2 cores is still held by an OpenBLAS worker spinning, which stalls torch's split.
        dist_np = dist.numpy()
        flat_np = np.flatnonzero(dist_np <= hardest.numpy()[:, None])
        flat, neg_values = torch.from_numpy(flat_np), torch.from_numpy(dist_np.ravel()[flat_np])
    else:
        flat = (dist <= hardest[:, None]).view(-1).nonzero().squeeze(1)
        neg_values = dist.view(-1)[flat]
    row_bounds = torch.searchsorted(flat, torch.arange(n_rows + 1, device=device) * n_cols)
    neg_rows = torch.repeat_interleave(
        torch.arange(n_rows, device=device), row_bounds.diff(), output_size=flat.numel()
    )

    positions = (
        _match_positions_float32 if dist.dtype == torch.float32 else _match_positions_any_dtype
    )
    pos_row, pos_position = positions(pos_rows, pos_values, neg_rows, neg_values, pos_start)
    kth = torch.arange(pos_row.numel(), device=device) - pos_start[pos_row] + 1
    precision = kth.to(torch.float64) / (pos_position + 1).to(torch.float64)
    ap_sum = torch.zeros(n_rows, dtype=torch.float64, device=device)
    ap_sum.index_add_(0, pos_row, precision)

    has_match = n_pos > 0
    n_pos_valid = n_pos[has_match]
    ap = ap_sum[has_match] / n_pos_valid.to(torch.float64)
    hardest_rank = pos_position[pos_start[has_match] + n_pos_valid - 1] + 1
    inp = n_pos_valid.to(torch.float64) / hardest_rank.to(torch.float64)
    first = pos_position[pos_start[has_match]]
    return ap, inp, first


def rank_metrics(
    distmat: ArrayLike | None = None,
    *,
    query_features: ArrayLike | None = None,
    gallery_features: ArrayLike | None = None,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_cams: ArrayLike,
    g_cams: ArrayLike,
    max_rank: int = 50,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
    distance: str = "cosine",
) -> dict:
    """mAP, mINP and CMC of a retrieval under the Market-1501 protocol (see module docstring).

    Give either ``distmat`` (query x gallery, smaller = closer) or both feature arrays (ranked
    by cosine distance of the L2-normalised features, in float32, or with ``distance=
    "euclidean"`` by squared Euclidean distance of the features as given). Queries are processed
    ``chunk_size`` rows at a time (default: :func:`default_chunk_size`); the device defaults to
    CUDA when available. Returns ``mAP``, ``mINP`` (fractions in [0, 1]), ``cmc`` (float array
    of length ``max_rank``, ``cmc[0]`` = rank-1), ``n_valid_queries``, ``n_skipped_queries``.
    Raises ``ValueError`` when no query has a true match.
    """
    if (distmat is None) == (query_features is None or gallery_features is None):
        raise ValueError("give either distmat or both query_features and gallery_features")
    if distmat is not None and (query_features is not None or gallery_features is not None):
        raise ValueError("give either distmat or features, not both")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    torch_device = _resolve_device(device)
    q_pid_np, g_pid_np = _labels(q_pids, "q_pids"), _labels(g_pids, "g_pids")
    q_cam_np, g_cam_np = _labels(q_cams, "q_cams"), _labels(g_cams, "g_cams")
    if len(q_pid_np) != len(q_cam_np) or len(g_pid_np) != len(g_cam_np):
        raise ValueError("pids and cams must have one entry per image")
    n_query, n_gallery = len(q_pid_np), len(g_pid_np)
    if chunk_size is None:
        chunk_size = default_chunk_size(n_gallery)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    if distmat is not None:
        source = _MatrixDistances(distmat, torch_device)
    else:
        source = _FeatureDistances(
            query_features, gallery_features, torch_device, chunk_size, distance
        )
    if source.shape != (n_query, n_gallery):
        raise ValueError(f"distances have shape {source.shape}, labels say {(n_query, n_gallery)}")

    def on_device(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(torch_device)

    q_pid_t, q_cam_t = on_device(q_pid_np), on_device(q_cam_np)
    gallery = _GalleryIndex(g_pid_np, g_cam_np, torch_device)

    aps, inps, firsts = [], [], []
    with torch.no_grad():
        for start in range(0, n_query, chunk_size):
            stop = min(start + chunk_size, n_query)
            dist = source.rows(start, stop)
            ap, inp, first = _chunk_stats(dist, q_pid_t[start:stop], q_cam_t[start:stop], gallery)
            del dist
            aps.append(ap.cpu())
            inps.append(inp.cpu())
            firsts.append(first.cpu())

    ap_all = torch.cat(aps).numpy() if aps else np.zeros(0)
    n_valid = int(ap_all.size)
    if n_valid == 0:
        raise ValueError("no query has a true match in the gallery: metrics are undefined")
    first_all = torch.cat(firsts).numpy()
    hits = np.bincount(np.minimum(first_all, max_rank), minlength=max_rank + 1)[:max_rank]
    return {
        "mAP": float(ap_all.mean()),
        "mINP": float(torch.cat(inps).numpy().mean()),
        "cmc": np.cumsum(hits) / n_valid,
        "n_valid_queries": n_valid,
        "n_skipped_queries": n_query - n_valid,
    }


def cmc_at(metrics: dict, ranks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"rank1": ..., "rank5": ...}`` from a :func:`rank_metrics` result, for metrics.json."""
    cmc = np.asarray(metrics["cmc"])
    out = {}
    for rank in ranks:
        if not 1 <= rank <= len(cmc):
            raise ValueError(f"rank {rank} outside the CMC curve (length {len(cmc)})")
        out[f"rank{rank}"] = float(cmc[rank - 1])
    return out

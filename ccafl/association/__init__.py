"""Cross-camera identity association (paper Eq. 12) and everything about its result.

- `graph`: centroids -> mutual per-camera nearest neighbours -> conflict-free components.
- `pseudo_labels`: one epoch's association of the training set (gid and image labels, the
  supervised reference's given labels) and its artifact tables (graph.parquet, labels.parquet).
- `quality`: pairwise precision/recall/F against true person ids.
- `diagnostics`: the only reader of ``train_truth.parquet`` here; it is never imported by
  training code, and this package's ``__init__`` does not import it.
"""

from ccafl.association.graph import (
    EDGE_COLUMNS,
    AssociationGraph,
    associate,
    associate_graph,
    center_per_camera,
    conflict_free_components,
    faiss_has_gpu,
)
from ccafl.association.quality import association_quality

__all__ = [
    "EDGE_COLUMNS",
    "AssociationGraph",
    "associate",
    "associate_graph",
    "association_quality",
    "center_per_camera",
    "conflict_free_components",
    "faiss_has_gpu",
]

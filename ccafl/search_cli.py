"""CLI commands for using a trained model: embed, index, search, export.

    python -m ccafl embed  --model final/model.pt --images DIR_or_manifest --out gallery.parquet
    python -m ccafl index  --features gallery.parquet --out gallery_index/
    python -m ccafl search --index gallery_index/ --query q1.jpg q2.jpg --other-cameras-only
    python -m ccafl export --model final/model.pt --out-dir exported/

Heavy imports stay inside the handlers, so ``python -m ccafl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ccafl.commands import command
from ccafl.data.datasets import IMAGE_SUFFIXES, DatasetError
from ccafl.settings import Settings

log = logging.getLogger("ccafl")

# Copies of ccafl.gallery_index / ccafl.person_search constants, so that building the parser
# does not import faiss and torch (`--help` stays fast); tests/test_search.py keeps them equal.
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
EXACT_UP_TO = 100_000
PROTOCOLS = ("none", "market1501")


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")
    return path


def _device(name: str):
    import torch

    from ccafl.inference.features import pick_device

    if name == "auto":
        return pick_device()
    if name == "cuda" and not torch.cuda.is_available():
        raise DatasetError("--device cuda, but torch sees no GPU (use --device cpu or auto)")
    return torch.device(name)


def _gpu_flag(value: str) -> bool | None:
    return {"auto": None, "on": True, "off": False}[value]


def _load_model(path: Path, device):
    from ccafl.inference.models import load_reid_model

    _require_file(path, "model file")
    try:
        return load_reid_model(path, device)
    except Exception as error:  # a wrong file: name it instead of a long unpickling trace
        raise DatasetError(
            f"cannot load {path} as a ccafl model ({type(error).__name__}: {error}); give the "
            "final/model.pt the pipeline wrote"
        ) from error


def _model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--model",
        type=Path,
        required=required,
        help="trained model: results/<name>/final/model.pt"
        + ("" if required else " (default: the model recorded in the index)"),
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--num-workers", type=int, default=0, help="image-decoding processes")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: the GPU when torch sees one, else the CPU",
    )


# --------------------------------------------------------------------------- embed


def _embed_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument(
        "--images",
        type=Path,
        required=True,
        help="a folder of images (searched recursively) or a manifest .csv/.parquet with a "
        "path column and optional camera and pid columns",
    )
    p.add_argument(
        "--root",
        type=Path,
        help="folder the manifest's paths are relative to (default: the manifest's folder)",
    )
    p.add_argument(
        "--camera-from",
        choices=["auto", "name", "folder"],
        default="auto",
        help="where a camera comes from when no manifest column gives it: the Market/Duke/MSMT "
        "file naming (auto, name) or the image's parent folder (folder)",
    )
    p.add_argument("--out", type=Path, required=True, help="Parquet file to write")


@command(
    "embed images with a trained model: L2-normalised retrieval features into a Parquet table",
    _embed_args,
)
def embed(args: argparse.Namespace, settings: Settings) -> None:
    import ccafl
    from ccafl.embedding import (
        EmbeddingTable,
        embed_table,
        file_sha256,
        list_images,
        retrieval_feature_name,
        write_embeddings,
    )

    _require_file(args.model, "model file")
    rows, root = list_images(args.images, args.root, args.camera_from)
    device = _device(args.device)
    model = _load_model(args.model, device)
    start = time.perf_counter()
    features = embed_table(
        model, root, rows, batch_size=args.batch_size, num_workers=args.num_workers, device=device
    )
    seconds = time.perf_counter() - start
    metadata = {
        "model_path": str(args.model.resolve()),
        "model_sha256": file_sha256(args.model),
        "feature_name": retrieval_feature_name(model),
        "feature_dim": int(features.shape[1]),
        "normalised": True,
        "images_root": str(root),
        "input_size": [int(v) for v in model.visual.image_size],
        "ccafl_version": ccafl.__version__,
    }
    write_embeddings(EmbeddingTable(rows, features, metadata), args.out)
    log.info(
        "%d images embedded (%s, %d-d) in %.1f s (%.1f images/s) on %s -> %s",
        len(rows),
        metadata["feature_name"],
        metadata["feature_dim"],
        seconds,
        len(rows) / max(seconds, 1e-9),
        device,
        args.out,
    )


# --------------------------------------------------------------------------- index


def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--features",
        type=Path,
        nargs="+",
        required=True,
        help="features table(s): `ccafl embed` output, or the evaluate rule's "
        "eval/features.parquet (with --split gallery); several are concatenated",
    )
    p.add_argument("--out", type=Path, required=True, help="index folder to write")
    p.add_argument("--split", help="keep only rows whose split column has this value")
    p.add_argument(
        "--camera-names",
        type=Path,
        help="ics/summary.json: turns the evaluation tables' camera numbers into camera names "
        "(c1, c2, ...) as read from query file names",
    )
    p.add_argument(
        "--images-root",
        type=Path,
        help="folder the table's paths are relative to (default: recorded by `ccafl embed`)",
    )
    p.add_argument(
        "--model",
        type=Path,
        help="model that made the features (recorded with its sha256; default: recorded by "
        "`ccafl embed`)",
    )
    p.add_argument(
        "--kind",
        choices=INDEX_KINDS,
        default="auto",
        help="auto: exact flat inner product up to --exact-up-to rows, IVF beyond",
    )
    p.add_argument("--exact-up-to", type=int, default=EXACT_UP_TO, help="see --kind")
    p.add_argument("--nlist", type=int, help="IVF lists (default: about sqrt(rows))")
    p.add_argument("--nprobe", type=int, help="IVF lists scanned per query (default nlist/16)")
    p.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node")
    p.add_argument("--ef-search", type=int, default=128, help="HNSW search depth")
    p.add_argument(
        "--gpu",
        choices=["auto", "on", "off"],
        default="auto",
        help="train/search on faiss GPUs (auto: when faiss sees one)",
    )


def _camera_names(path: Path) -> list[str]:
    import json

    summary = json.loads(_require_file(path, "camera names (ics/summary.json)").read_text())
    if "cameras" not in summary:
        raise DatasetError(f"{path} has no 'cameras' list (expected ics/summary.json)")
    return [str(name) for name in summary["cameras"]]


def _gallery_table(args: argparse.Namespace):
    import numpy as np
    import pandas as pd

    from ccafl.embedding import read_embeddings

    tables = [read_embeddings(path) for path in args.features]
    digests = {t.metadata.get("model_sha256") for t in tables}
    if len(digests) > 1:
        raise DatasetError("the features files were made by different models (model_sha256)")
    rows, features = [], []
    for path, table in zip(args.features, tables, strict=True):
        keep = np.ones(len(table.rows), dtype=bool)
        if args.split is not None:
            if "split" not in table.rows.columns:
                raise DatasetError(f"--split given but {path} has no split column")
            keep = (table.rows["split"] == args.split).to_numpy()
        rows.append(table.rows[keep])
        features.append(table.features[keep])
    rows = pd.concat(rows, ignore_index=True)
    if rows.empty:
        raise DatasetError(f"no rows to index in {', '.join(map(str, args.features))}")
    features = np.concatenate(features)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    features = (features / np.maximum(norms, 1e-12)).astype(np.float32)
    if args.camera_names is not None:
        names = _camera_names(args.camera_names)
        cameras = rows["camera"].astype(np.int64)
        if cameras.min() < 0 or cameras.max() >= len(names):
            raise DatasetError(
                f"camera numbers outside the {len(names)} cameras of {args.camera_names}"
            )
        rows["camera"] = [names[c] for c in cameras]
    columns = [c for c in ("path", "camera", "pid") if c in rows.columns]
    rows = rows[columns].astype({"camera": str})
    return rows, features, tables[0].metadata


@command(
    "build a faiss search index (exact or approximate) over a features table",
    _index_args,
)
def index(args: argparse.Namespace, settings: Settings) -> None:
    import faiss

    from ccafl.embedding import file_sha256
    from ccafl.gallery_index import GalleryIndex, build_index

    rows, features, metadata = _gallery_table(args)
    info = {k: metadata[k] for k in ("model_path", "model_sha256", "feature_name") if k in metadata}
    if args.model is not None:
        info["model_path"] = str(_require_file(args.model, "model file").resolve())
        info["model_sha256"] = file_sha256(args.model)
    root = args.images_root or metadata.get("images_root")
    start = time.perf_counter()
    index, params = build_index(
        features,
        args.kind,
        exact_up_to=args.exact_up_to,
        nlist=args.nlist,
        nprobe=args.nprobe,
        hnsw_m=args.hnsw_m,
        ef_search=args.ef_search,
        use_gpu=_gpu_flag(args.gpu),
    )
    info.update(
        params,
        images_root=str(Path(root).resolve()) if root else None,
        build_seconds=round(time.perf_counter() - start, 3),
        faiss_version=faiss.__version__,
        sources=[str(p) for p in args.features],
    )
    GalleryIndex(index, rows, info, use_gpu=False).save(args.out)
    log.info(
        "%s index of %d rows x %d-d written to %s (%.1f s)",
        params["kind"],
        len(rows),
        features.shape[1],
        args.out,
        info["build_seconds"],
    )


# --------------------------------------------------------------------------- search


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=Path, required=True, help="folder written by `ccafl index`")
    p.add_argument(
        "--query",
        type=Path,
        nargs="+",
        required=True,
        help="query image(s), or folders of them",
    )
    p.add_argument("--top-k", type=int, default=20, help="gallery images listed per query")
    p.add_argument(
        "--other-cameras-only",
        action="store_true",
        help="leave out gallery images from the query's own camera",
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="none",
        help="market1501: leave out what the evaluation leaves out (gallery images of the "
        "query's person in the query's camera, and junk pid -1), so ranks match `evaluate`",
    )
    p.add_argument(
        "--rerank", action="store_true", help="k-reciprocal re-ranking (ccafl.reranking)"
    )
    p.add_argument(
        "--rerank-depth",
        type=int,
        default=100,
        help="re-rank within the union of every query's this many nearest rows",
    )
    p.add_argument(
        "--query-camera",
        help="camera of every query, when their file names do not say (e.g. c1)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("search_results"),
        help="folder for ranking.csv, contact_sheet.png and contact_sheet.html",
    )
    p.add_argument(
        "--gpu", choices=["auto", "on", "off"], default="auto", help="search on faiss GPUs"
    )
    p.add_argument("--no-sheet", action="store_true", help="write the ranking table only")
    _model_args(p, required=False)


def _query_paths(items: list[Path]) -> list[str]:
    paths: list[str] = []
    for item in items:
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise DatasetError(f"no images in query folder {item}")
            paths += [str(p.resolve()) for p in found]
        else:
            paths.append(str(_require_file(item, "query image").resolve()))
    return paths


@command(
    "find query people in a gallery index: ranked table and contact sheet (PNG + HTML)",
    _search_args,
)
def search(args: argparse.Namespace, settings: Settings) -> None:
    from ccafl.contact_sheet import write_contact_sheet_html, write_contact_sheet_png
    from ccafl.embedding import embed_table, file_sha256
    from ccafl.gallery_index import GalleryIndex
    from ccafl.io import write_text
    from ccafl.person_search import query_table, rank_gallery

    index = GalleryIndex.load(args.index, use_gpu=_gpu_flag(args.gpu))
    queries = query_table(_query_paths(args.query), args.query_camera)
    model_path = args.model or (
        Path(index.info["model_path"]) if "model_path" in index.info else None
    )
    if model_path is None:
        raise DatasetError(f"{args.index} records no model: name the one that made it with --model")
    _require_file(model_path, "model file")
    expected = index.info.get("model_sha256")
    if expected and file_sha256(model_path) != expected:
        raise DatasetError(
            f"{model_path} is not the model that made {args.index} (sha256 differs): pass the "
            "matching --model or rebuild the index with this model"
        )
    device = _device(args.device)
    model = _load_model(model_path, device)
    features = embed_table(
        model, "/", queries, batch_size=args.batch_size, num_workers=args.num_workers, device=device
    )
    if features.shape[1] != index.dim:
        raise DatasetError(f"model features are {features.shape[1]}-d, the index {index.dim}-d")
    ranking = rank_gallery(
        index,
        features,
        queries,
        top_k=args.top_k,
        other_cameras_only=args.other_cameras_only,
        protocol=args.protocol,
        rerank=args.rerank,
        rerank_depth=args.rerank_depth,
    )
    write_text(ranking.to_csv(index=False), args.out / "ranking.csv")
    if not args.no_sheet:
        root = index.info.get("images_root")
        write_contact_sheet_png(ranking, args.out / "contact_sheet.png", root)
        write_contact_sheet_html(
            ranking, args.out / "contact_sheet.html", root, title=f"ccafl search: {args.index}"
        )
    shown = ranking[ranking["rank"] <= 5]
    print(shown.to_string(index=False, max_colwidth=60))
    log.info(
        "%d queries ranked against %d gallery images (%s index%s) -> %s",
        len(queries),
        len(index),
        index.info.get("kind", "?"),
        ", re-ranked" if args.rerank else "",
        args.out,
    )


# --------------------------------------------------------------------------- export


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="results/<name>/final/model.pt")
    p.add_argument("--out-dir", type=Path, required=True, help="folder for the exported files")
    p.add_argument(
        "--format",
        choices=["torchscript", "onnx", "both"],
        default="both",
        help="onnx needs the optional extra: pip install 'ccafl[onnx]'",
    )


@command(
    "export the image encoder + retrieval head to TorchScript / ONNX, with a parity check",
    _export_args,
)
def export(args: argparse.Namespace, settings: Settings) -> None:
    import torch

    from ccafl.embedding import file_sha256
    from ccafl.export import (
        example_images,
        export_onnx,
        export_torchscript,
        onnx_features,
        parity,
    )
    from ccafl.io import write_json

    model = _load_model(args.model, "cpu")
    images = example_images(model, batch=4, seed=1)
    report: dict = {
        "model_path": str(args.model.resolve()),
        "model_sha256": file_sha256(args.model),
        "input": "N x 3 x H x W, CLIP-normalised",
        "input_size": [int(v) for v in model.visual.image_size],
        "output": "N x D L2-normalised retrieval features",
    }
    if args.format in ("torchscript", "both"):
        path = export_torchscript(model, args.out_dir / "model.torchscript.pt")
        with torch.no_grad():
            exported = torch.jit.load(str(path))(images)
        report["torchscript"] = {"file": path.name, "max_abs_diff": parity(model, exported, images)}
    if args.format in ("onnx", "both"):
        try:
            path = export_onnx(model, args.out_dir / "model.onnx")
        except RuntimeError as error:
            raise DatasetError(str(error)) from error
        exported = onnx_features(path, images)
        report["onnx"] = {"file": path.name, "max_abs_diff": parity(model, exported, images)}
    write_json(report, args.out_dir / "export.json")
    for name in ("torchscript", "onnx"):
        if name in report:
            log.info(
                "%s: %s, max abs diff vs eager %.2e",
                name,
                report[name]["file"],
                report[name]["max_abs_diff"],
            )

"""Mutation check: small deliberate bugs in the core modules must make a test fail.

A test suite that passes is only worth something if it fails when the code is wrong. This
script applies one small bug at a time (a flipped momentum, a dropped all-gather, a resume
that forgets the optimizers, ...) to the core modules (losses, memory, association,
samplers, training state and resume, evaluation, ICS), runs the test files that cover that
code, restores the file, and prints which bugs were *killed* (a test failed) and which
*survived* (every test passed: a claim nothing checks).

It works on a copy of the tree (the tracked and untracked-but-not-ignored files), so the
working tree is never touched; inside the copy every mutated file is restored in a ``finally``
block before the next mutation. Run before a release (``make mutate``; every mutation starts
a fresh pytest with its session fixtures, 9-11 minutes each on 2 loaded CPU cores) and list
the survivors in the README's Development section.

    python scripts/mutate.py                 # every mutation
    python scripts/mutate.py --list          # names and what each bug is
    python scripts/mutate.py --only resume-skips-optimizers stage2-mixed-camera-batches
    python scripts/mutate.py --tests tests/test_training.py --only resume-skips-optimizers
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # file, relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # test files that should catch it (missing ones are skipped)
    bug: str  # the bug, in words


TRAINING = "tests/test_training.py"
RESUME = "tests/test_resume.py"
STAGE3 = "tests/test_stage3_association.py"
STAGE2 = "tests/test_stage2_batches.py"
DDP = ("tests/test_distributed_sync.py", "tests/test_distributed.py")
LEAK = "tests/test_ics_leakage.py"

MUTATIONS: tuple[Mutation, ...] = (
    # --- training state and resume (ccafl/training/state.py) ---------------------------------
    Mutation(
        "resume-skips-optimizers",
        "ccafl/training/state.py",
        '        state.optimizer.load_state_dict(checkpoint["optimizer"])\n'
        '        state.classifier_optimizer.load_state_dict(checkpoint["classifier_optimizer"])\n',
        "",
        (RESUME, TRAINING),
        "resume does not load either optimizer state (Adam moments restart every epoch)",
    ),
    Mutation(
        "resume-skips-classifier-optimizer",
        "ccafl/training/state.py",
        '        state.classifier_optimizer.load_state_dict(checkpoint["classifier_optimizer"])\n',
        "",
        (RESUME, TRAINING),
        "resume does not load the global-id classifier's optimizer state",
    ),
    Mutation(
        "resume-skips-classifier",
        "ccafl/training/state.py",
        '        state.classifier.load_state_dict(checkpoint["classifier"])\n',
        "",
        (RESUME, TRAINING),
        "resume does not load the global-id classifier (ICAL then uses a random classifier)",
    ),
    Mutation(
        "resume-skips-rng",
        "ccafl/training/state.py",
        "            set_rng_state(per_rank[distributed.rank()])",
        "            pass",
        (RESUME, TRAINING),
        "resume does not restore the RNG states (augmentation draws differ after a restart)",
    ),
    Mutation(
        "classifier-update-without-gather",
        "ccafl/training/state.py",
        "        feats = distributed.all_gather_cat(feats.detach())\n"
        "        gids = distributed.all_gather_cat(gids)\n",
        "",
        DDP,
        "under DDP each rank trains the classifier on its own slice: classifiers diverge",
    ),
    # --- stage 3 (ccafl/training/inter.py) ----------------------------------------------------
    Mutation(
        "stage3-ignores-association",
        "ccafl/association/pseudo_labels.py",
        "    gid_labels = np.asarray(gid_labels)\n",
        "    gid_labels = np.arange(n_gids)\n",
        (STAGE3, TRAINING),
        "stage 3 ignores the association: every gid is its own pseudo-label",
    ),
    Mutation(
        "stage3-loss-targets-are-gids",
        "ccafl/training/inter.py",
        "    image_labels = torch.as_tensor(association.image_labels)\n"
        "    gid_labels = torch.as_tensor(association.gid_labels).to(device)\n",
        "    association = Association(np.arange(data.n_gids), association.edges, data.gids)\n"
        "    image_labels = torch.as_tensor(association.image_labels)\n"
        "    gid_labels = torch.as_tensor(association.gid_labels).to(device)\n",
        (STAGE3, TRAINING),
        "stage 3 writes the association's labels but trains on gids (labels.parquet lies)",
    ),
    Mutation(
        "ddp-prototype-update-without-gather",
        "ccafl/training/inter.py",
        "        gather = distributed.all_gather_cat\n",
        "        gather = lambda tensor: tensor  # noqa: E731\n",
        DDP,
        "under DDP each rank updates the prototypes from its own slice only",
    ),
    # --- stage 2 (ccafl/training/intra.py) ----------------------------------------------------
    Mutation(
        "ddp-memory-update-without-gather",
        "ccafl/training/intra.py",
        "        gather = distributed.all_gather_cat\n",
        "        gather = lambda tensor: tensor  # noqa: E731\n",
        DDP,
        "under DDP each rank updates the intra-camera memories from its own slice only",
    ),
    Mutation(
        "stage2-mixed-camera-batches",
        "ccafl/training/intra.py",
        'groups = data.cameras if train.intra_batches == "camera" else None',
        "groups = None",
        (STAGE2, TRAINING),
        "stage 2 draws batches over all cameras instead of one camera per batch",
    ),
    # --- stage 1 (ccafl/training/prompt.py) ---------------------------------------------------
    Mutation(
        "prompt-cache-misaligned",
        "ccafl/training/prompt.py",
        "    cached = features_of() if use_cache else None\n",
        "    cached = features_of(paths[::-1]) if use_cache else None\n",
        ("tests/test_prompt_cache.py", TRAINING),
        "the stage-1 feature cache is built in another order than the labels it is indexed by",
    ),
    # --- the ICS rule -------------------------------------------------------------------------
    Mutation(
        "training-opens-truth-table",
        "ccafl/training/state.py",
        '        train = pd.read_parquet(Path(ics_dir) / "train.parquet")\n',
        '        train = pd.read_parquet(Path(ics_dir) / "train.parquet")\n'
        '        pd.read_parquet(Path(ics_dir) / "train_truth.parquet")\n',
        (LEAK, TRAINING),
        "stages 2-3 open train_truth.parquet when they load their data",
    ),
    Mutation(
        "prompt-opens-truth-table",
        "ccafl/training/prompt.py",
        '    train = pd.read_parquet(Path(ics_dir) / "train.parquet")\n',
        '    train = pd.read_parquet(Path(ics_dir) / "train.parquet")\n'
        '    pd.read_parquet(Path(ics_dir) / "train_truth.parquet")\n',
        (LEAK, TRAINING),
        "stage 1 opens train_truth.parquet",
    ),
    Mutation(
        "train-table-carries-person-id",
        "ccafl/data/ics.py",
        '        train=train[TRAIN_COLUMNS].astype({"camera": "int64", "intra_id": "int64"}),',
        "        train=train[TRAIN_COLUMNS]"
        '.assign(person=train["pid"]).astype({"camera": "int64", "intra_id": "int64"}),',
        (LEAK, "tests/test_ics.py"),
        "the training table carries the cross-camera person id under another name",
    ),
    Mutation(
        "gid-without-camera-offset",
        "ccafl/data/ics.py",
        '    train["gid"] = train["camera"].map(offsets).astype("int64") + train["intra_id"]',
        '    train["gid"] = train["intra_id"]',
        ("tests/test_ics.py",),
        "global ICS ids are not offset per camera (ids of different cameras collide)",
    ),
    # --- losses (ccafl/losses.py) -------------------------------------------------------------
    Mutation(
        "memory-loss-without-temperature",
        "ccafl/losses.py",
        "F.normalize(memory, dim=1).t() / temperature",
        "F.normalize(memory, dim=1).t()",
        ("tests/test_losses.py",),
        "Eq. 7/14 logits are not divided by the temperature",
    ),
    Mutation(
        "hard-positive-is-easiest",
        "ccafl/losses.py",
        'reduce="amin"',
        'reduce="amax"',
        ("tests/test_losses.py",),
        "Eq. 8 takes the most similar own-id instance instead of the least similar",
    ),
    Mutation(
        "icdl-lambda-swapped",
        "ccafl/losses.py",
        "    return lam * l_intra1 + (1.0 - lam) * l_intra2",
        "    return (1.0 - lam) * l_intra1 + lam * l_intra2",
        ("tests/test_losses.py",),
        "Eq. 10 weights L_intra2 by lambda instead of L_intra1",
    ),
    Mutation(
        "i2tce-without-label-smoothing",
        "ccafl/losses.py",
        "label_smoothing=label_smoothing, reduction=reduction",
        "label_smoothing=0.0, reduction=reduction",
        ("tests/test_losses.py",),
        "Eq. 9/15 ignore the label smoothing",
    ),
    Mutation(
        "ical-negatives-include-positives",
        "ccafl/losses.py",
        "    return q, ~positive",
        "    return q, ~own",
        ("tests/test_losses.py",),
        "Eq. 18's negative set G- contains the associated gids",
    ),
    # --- memories (ccafl/memory.py) -----------------------------------------------------------
    Mutation(
        "momentum-direction",
        "ccafl/memory.py",
        "    updated = momentum * memory[present] + (1.0 - momentum) * batch_mean",
        "    updated = (1.0 - momentum) * memory[present] + momentum * batch_mean",
        ("tests/test_memory.py",),
        "Eq. 6/13 weight the batch by alpha instead of the old row",
    ),
    Mutation(
        "memory-rows-not-renormalised",
        "ccafl/memory.py",
        "    memory[present] = F.normalize(updated, dim=1)",
        "    memory[present] = updated",
        ("tests/test_memory.py",),
        "updated memory rows are not re-normalised",
    ),
    Mutation(
        "instance-slot-not-overwritten",
        "ccafl/memory.py",
        "        self.instances[slots] = F.normalize(",
        "        _ = F.normalize(",
        ("tests/test_memory.py",),
        "Eq. 5's instance memory is never updated",
    ),
    # --- association (ccafl/association/graph.py) ------------------------------------------
    Mutation(
        "association-not-mutual",
        "ccafl/association/graph.py",
        "    keep = (nearest_gid[partner, camera_codes[gid]] == gid) & (gid < partner)",
        "    keep = gid < partner",
        ("tests/test_association.py",),
        "Eq. 12 edges without the mutual-nearest-neighbour condition",
    ),
    Mutation(
        "association-threshold-ignored",
        "ccafl/association/graph.py",
        "    below = distance.astype(np.float64) < threshold",
        "    below = distance.astype(np.float64) < 2 * threshold",
        ("tests/test_association.py",),
        "Eq. 12's distance threshold T is doubled",
    ),
    Mutation(
        "association-camera-conflicts-kept",
        "ccafl/association/graph.py",
        "        elif closed[root_a] or closed[root_b] or cameras_of[root_a] & cameras_of[root_b]:",
        "        elif closed[root_a] or closed[root_b]:",
        ("tests/test_association.py",),
        "a cluster may hold two gids of one camera",
    ),
    # --- samplers (ccafl/data/samplers.py) ----------------------------------------------------
    Mutation(
        "sampler-ignores-cameras",
        "ccafl/data/samplers.py",
        "        if groups is None:",
        "        if True:",
        (STAGE2, TRAINING),
        "the PK sampler mixes cameras even when asked for per-camera batches",
    ),
    Mutation(
        "sampler-same-batches-every-epoch",
        "ccafl/data/samplers.py",
        "np.random.default_rng([seed, epoch])",
        "np.random.default_rng(seed)",
        (TRAINING,),
        "every epoch draws the same batches",
    ),
    # --- evaluation (ccafl/evaluation.py) -----------------------------------------------------
    Mutation(
        "eval-keeps-same-camera-matches",
        "ccafl/evaluation.py",
        "    same_view = gallery.cams[pair_cols] == q_cams[pair_rows]",
        "    same_view = gallery.cams[pair_cols] < -1",
        ("tests/test_evaluation.py",),
        "same-person same-camera gallery images count as true matches",
    ),
    Mutation(
        "eval-keeps-junk",
        "ccafl/evaluation.py",
        "    dist.index_fill_(1, gallery.junk, torch.inf)\n",
        "",
        ("tests/test_evaluation.py",),
        "junk gallery images (pid -1) stay in the ranking as negatives",
    ),
    Mutation(
        "minp-without-match-count",
        "ccafl/evaluation.py",
        "    inp = n_pos_valid.to(torch.float64) / hardest_rank.to(torch.float64)",
        "    inp = 1.0 / hardest_rank.to(torch.float64)",
        ("tests/test_evaluation.py",),
        "mINP forgets the number of true matches",
    ),
)


def tree_files(repo: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a clean checkout plus new work holds."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return [name.decode() for name in listed if name and (repo / name.decode()).is_file()]


def copy_tree(repo: Path, dest: Path) -> None:
    for name in tree_files(repo):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)


def run_tests(
    tree: Path, tests: list[str], timeout: int, threads: int | None
) -> tuple[str, str, float]:
    """('passed' | 'failed' | 'error' | 'timeout', first failure line, seconds)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "COLUMNS": "500",  # untruncated assertion messages in pytest's summary
    }
    if threads:  # fewer threads waste less on a loaded machine, but change float rounding
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-rfE"]
    start = time.perf_counter()
    # Own session, so that a timeout also ends the processes the tests started (torchrun,
    # snakemake, `python -m ccafl ...`), not only pytest.
    process = subprocess.Popen(
        [*command, *tests],
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return "timeout", f"no result within {timeout} s", time.perf_counter() - start
    finally:
        if process.poll() is None:  # interrupted: do not leave a test run behind
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    seconds = time.perf_counter() - start
    failed = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
    detail = failed[0] if failed else (out.strip().splitlines() or [""])[-1]
    outcome = {0: "passed", 1: "failed"}.get(process.returncode, "error")
    return outcome, detail[:400], seconds


def check_import_location(tree: Path) -> None:
    """The copy's package must be the one imported (not an editable install elsewhere)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    found = subprocess.run(
        [sys.executable, "-c", "import ccafl; print(ccafl.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"mutate: the copy's ccafl is not the one imported ({found})")


def mutate_once(
    tree: Path, mutation: Mutation, tests: list[str], timeout: int, threads: int | None
) -> dict:
    path = tree / mutation.path
    original = path.read_text()
    count = original.count(mutation.old)
    if count != 1:
        return {
            "result": "stale",
            "detail": f"{mutation.path}: the text to mutate occurs {count} times (code changed?)",
            "seconds": 0.0,
        }
    try:
        path.write_text(original.replace(mutation.old, mutation.new))
        outcome, detail, seconds = run_tests(tree, tests, timeout, threads)
    finally:
        path.write_text(original)
    result = {"failed": "killed", "error": "killed (error)", "passed": "survived"}.get(
        outcome, outcome
    )
    return {"result": result, "detail": detail, "seconds": seconds}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Apply small deliberate bugs to the core modules one at a time, run the tests that "
            "cover each, and report which bugs no test catches (survivors). Works on a copy "
            "of the tree; the working tree is never modified."
        )
    )
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    parser.add_argument(
        "--tests",
        nargs="+",
        metavar="FILE",
        help="run these test files for every mutation instead of each mutation's own",
    )
    parser.add_argument(
        "--timeout", type=int, default=3600, help="seconds per mutation (default 3600)"
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the first run of the unmutated copy (which must pass for results to mean much)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS of the test runs (default: as in the environment, like make test)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the copy of the tree")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (e.g. `kill`) unwinds like Ctrl-C, so the finally blocks restore and clean up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.list:
        for m in MUTATIONS:
            found = (REPO / m.path).read_text().count(m.old)
            state = "ok" if found == 1 else f"STALE ({found} matches)"
            print(f"{m.name:38s} {m.path:28s} {state:6s} {m.bug}")
        return 0
    chosen = list(MUTATIONS)
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTATIONS}
        if unknown:
            print(f"mutate: unknown mutation(s) {sorted(unknown)}; see --list", file=sys.stderr)
            return 2
        chosen = [m for m in MUTATIONS if m.name in args.only]

    work = Path(tempfile.mkdtemp(prefix="ccafl-mutate-"))
    tree = work / "tree"
    try:
        copy_tree(REPO, tree)
        check_import_location(tree)
        snapshot = {name: (tree / name).read_bytes() for name in tree_files(REPO)}

        def tests_for(mutation: Mutation) -> list[str]:
            wanted = args.tests or list(mutation.tests)
            return [t for t in wanted if (tree / t).exists()]

        if not args.no_baseline:
            every = sorted({t for m in chosen for t in tests_for(m)})
            outcome, detail, seconds = run_tests(tree, every, args.timeout * 2, args.threads)
            print(f"baseline (unmutated) {outcome} in {seconds:.0f} s", flush=True)
            if outcome != "passed":
                print(f"mutate: the unmutated tests do not pass: {detail}", file=sys.stderr)
                return 1
        rows = []
        for mutation in chosen:
            tests = tests_for(mutation)
            outcome = mutate_once(tree, mutation, tests, args.timeout, args.threads)
            rows.append((mutation, outcome))
            print(
                f"{outcome['result']:15s} {mutation.name:38s} {outcome['seconds']:6.0f} s  "
                f"{outcome['detail']}",
                flush=True,
            )
        changed = [name for name, data in snapshot.items() if (tree / name).read_bytes() != data]
        if changed:  # cannot happen with the finally above; checked because it must not
            raise SystemExit(f"mutate: files not restored in the copy: {changed}")
    finally:
        if args.keep:
            print(f"copy kept at {tree}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    survivors = [m for m, o in rows if o["result"] == "survived"]
    stale = [m for m, o in rows if o["result"] == "stale"]
    print(
        f"\n{len(rows)} mutations: {sum(o['result'].startswith('killed') for _, o in rows)} killed, "
        f"{len(survivors)} survived, {len(stale)} stale"
    )
    for m in survivors:
        print(f"  survived: {m.name}: {m.bug} ({m.path})")
    for m in stale:
        print(f"  stale: {m.name}: update its text in scripts/mutate.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())

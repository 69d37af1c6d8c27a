"""The command line: ``python -m helpers recipe | search | train`` (README "Command line", notebook 07).

``recipe`` runs the whole recipe of notebook 07 on a file (or STS-B): check
and profile the data, search, train on everything, test against
the untuned model, save and reload the model. ``search`` runs only the search.
Both write ``summary.json`` in the output folder and print a short report.
``train --config JSON`` runs one :func:`helpers.train`, for torchrun
(``torchrun --nproc_per_node N -m helpers train --config '{...}'``, README "Scaling out").

Applications layer. Its imports of the package sit inside functions on purpose:
``python -m helpers --help`` loads neither torch's trainer, Optuna nor matplotlib
(``tests/test_layers.py`` checks it).

Exit codes: 0 done, 2 bad input (reported before anything trains),
130 stopped with Ctrl-C (the study and the best model so far are kept; the
same command resumes the study), 1 a worker of ``--workers N`` failed.
Under torchrun only rank 0 prints the report (README "Scaling out").
"""
from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130
EXIT_WORKER_FAILED = 1  # --workers N: a worker process failed (its log is named in the message)


def _int_at_least(minimum: int):
    """An argparse type: a whole number no smaller than ``minimum``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return v
    return parse


_positive_int, _whole = _int_at_least(1), _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return v


def _fraction(text: str) -> float:
    v = _positive_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction in (0, 1], e.g. 0.1 for 10%")
    return v


def _number(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
    return v


def _add_common(p: argparse.ArgumentParser) -> None:
    from .config import SCALES

    PRUNERS, SUBSET_FRACTION = ("halving", "hyperband", "median", "none"), 0.1  # helpers.tuning's, checked by a test
    SPACES = ("broad", "narrow")  # helpers.tuning's too

    d = p.add_argument_group("data")
    d.add_argument("--train", default="stsb", metavar="FILE",
                   help="training data: a .csv/.tsv/.jsonl file with columns sentence1, sentence2, score (graded "
                        "similarity) or anchor, positive[, negative] (retrieval); 'stsb' (default) for the STS "
                        "Benchmark at the scale's sizes")
    d.add_argument("--dev", metavar="FILE", help="validation file with the same columns (default: 10%% of --train)")
    d.add_argument("--test", metavar="FILE", help="test file with the same columns (default: another 10%% of --train)")
    d.add_argument("--score-range", nargs=2, type=_number, default=(0.0, 1.0), metavar=("LOW", "HIGH"),
                   help="the range of your scores, rescaled to 0-1 (default: 0 1; STS-B style files use 0 5)")
    d.add_argument("--train-size", type=_positive_int, metavar="N",
                   help="use N training rows (default: all of a file; the scale's size for stsb)")
    o = p.add_argument_group("output")
    o.add_argument("--output", required=True, metavar="DIR",
                   help="folder for model/, study.db and summary.json; new, empty, or an earlier run's (to resume)")
    s = p.add_argument_group("search")
    s.add_argument("--scale", choices=list(SCALES), default=None,
                   help="sizes, epochs and default trials: smoke (seconds), workshop (a laptop), full (a GPU); "
                        "default: $WORKSHOP_SCALE, else workshop")
    s.add_argument("--space", choices=list(SPACES), default="narrow",
                   help="what the search tries: 'narrow' (default) tries each of the usual fine-tuning rates "
                        "2e-5, 3e-5, 5e-5 once, each trial on all the data for --epochs, everything else at the "
                        "common default (it beat the common default on STS-B in notebook 07; costs 3 full runs); "
                        "'broad' samples rate, warm-up, schedule, batch, weight decay, freezing and layer-wise "
                        "decay with TPE on a subset (notebook 06's search)")
    s.add_argument("--trials", type=_positive_int, metavar="N",
                   help="finished trials the study should hold (default: the narrow space's 3 rates; with "
                        "--space broad the scale's, 14 at workshop); a rerun with a larger N adds trials")
    s.add_argument("--subset", type=_fraction, default=None, metavar="FRACTION",
                   help=f"share of the training rows the search trains on (default: 1; {SUBSET_FRACTION} with "
                        "--space broad)")
    s.add_argument("--pruner", choices=list(PRUNERS), default=None,
                   help="stops weak trials at their validation evaluations: none (the default), or with "
                        "--space broad successive halving (its default), hyperband or median")
    s.add_argument("--study-name", default="recipe", metavar="NAME", help="name of the study (default: recipe)")
    s.add_argument("--storage", metavar="PATH_OR_URL",
                   help="where the study is stored: a SQLite file or a database URL (default: DIR/study.db); "
                        "several workers given the same storage and name share one study")
    s.add_argument("--worker", type=_whole, default=0, metavar="K",
                   help="when several processes share one study (same --storage and --study-name), give each its "
                        "own number 0, 1, 2... so that their samplers propose different configurations (default: 0)")
    s.add_argument("--workers", type=_positive_int, metavar="N",
                   help="start N local search workers on the same study (worker k runs with --worker K*N+k, its log "
                        "in DIR/workers/), wait for all, then finish here once (the final training for recipe); "
                        "needs a storage every worker can open (the default DIR/study.db, or --storage)")
    t = p.add_argument_group("training")
    t.add_argument("--model", metavar="NAME_OR_DIR",
                   help="model to fine-tune: a saved folder or a Hugging Face id (default: the embedded all-MiniLM-L6-v2)")
    t.add_argument("--loss", choices=["cosent", "cosine", "angle", "mnrl", "cached_mnrl"],
                   help="loss (default: cosent for scored pairs, mnrl for anchor/positive)")
    t.add_argument("--max-seq-length", type=_positive_int, metavar="TOKENS",
                   help="truncate texts to this many tokens (default: the scale's, 128 at workshop)")
    t.add_argument("--seed", type=int, default=0, help="seed for the data split, the subset, the sampler and training")
    t.add_argument("--device", metavar="DEVICE", help="cpu, cuda, cuda:N or mps (default: the fastest available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")


def build_parser() -> argparse.ArgumentParser:
    """The parser: ``recipe`` and ``search`` subcommands, every option explained by ``--help``
    (the ``python -m helpers`` command line; notebook 07)."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers",
        description="Fine-tune a Sentence Transformer on your own data: validate the data, search "
                    "hyperparameters with Optuna, train on everything, test, save.",
        epilog="Ctrl-C stops cleanly (exit code 130) and keeps the study and the best model so far; "
               "running the same command again resumes the study and reuses the runs that had finished. "
               "Bad input exits with code 2 before anything trains.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{recipe,search,train}")
    rp = sub.add_parser("recipe", help="the whole recipe: check, search, train, test, save, reload",
                        description="Check and profile the data, search (the usual rates, or --space broad), train the best configuration "
                                    "on all the training data with early stopping, test it against the untuned "
                                    "model, save DIR/model, reload it and encode a few sentences.")
    _add_common(rp)
    f = rp.add_argument_group("final training")
    f.add_argument("--epochs", type=_positive_float, metavar="N",
                   help="epochs of every run (default: the scale's, 1 at workshop)")
    f.add_argument("--search-epochs", type=_positive_float, metavar="N",
                   help="epochs of each search trial (default: --epochs). Fewer cost less, but a trial shorter "
                        "than the final run favours other rates: on STS-B one-epoch trials ranked settings almost "
                        "in reverse of four-epoch runs (notebook 07)")
    f.add_argument("--patience", type=_positive_int, default=3, metavar="N",
                   help="early stopping: evaluations without improvement before the final run stops (default: 3)")
    f.add_argument("--no-default", action="store_true",
                   help="skip training the common default (batch 16, 2e-5, 10%% linear warm-up) on the same data; "
                        "by default it is trained after the final run and the report says whether the tuned "
                        "configuration beat it")
    sp = sub.add_parser("search", help="only the search (a stored, resumable Optuna study)",
                        description="Check the data and run (or resume) the Optuna study; writes "
                                    "DIR/summary.json with the best parameters and keeps the best trial's model "
                                    "in DIR/best_trial_model.")
    _add_common(sp)
    sp.add_argument("--epochs", type=_positive_float, metavar="N",
                    help="epochs of every trial (default: the scale's)")
    tp = sub.add_parser("train", help="one training run (for torchrun: every process prints its numbers)",
                        description="Train once with the given TrainConfig settings. Under torchrun every process "
                                    "prints one line 'RESULT {json}'; rank 0 alone saves the model and --result.")
    tp.add_argument("--config", default="{}", help="TrainConfig settings as a JSON object")
    tp.add_argument("--result", help="rank 0 writes the TrainResult here as JSON")
    return parser


def train_once(args) -> int:
    """``python -m helpers train --config '{...}'``: one :func:`helpers.train` run, for torchrun
    (the ``python -m helpers`` command line under torchrun; notebook 07).

    Every process prints one JSON line ``{"rank", "world_size", "effective_batch",
    "learning_rate", "steps", "dev", "test", ...}`` (so the ranks can be compared);
    rank 0 alone saves the model (``output_dir`` in the config) and ``--result FILE``.
    Example: ``torchrun --nproc_per_node 2 -m helpers train --config '{"max_steps": 2}'``.
    """
    import json

    from . import distributed as Dist
    from .settings import TrainConfig
    from .training import train

    settings = json.loads(args.config)
    for key in ("score_range", "frozen_parts"):
        if isinstance(settings.get(key), list):
            settings[key] = tuple(settings[key])
    r = train(TrainConfig(**settings), progress=False)
    line = {"rank": Dist.rank(), "world_size": Dist.world_size(), "effective_batch": r.effective_batch,
            "learning_rate": r.learning_rate, "steps": r.steps, "dev": r.dev_metric, "test": r.test_metric,
            "stop_reason": r.stop_reason, "train_loss": [e["loss"] for e in r.train_loss], "wall_s": r.wall_time}
    print("RESULT " + json.dumps(line), flush=True)
    if args.result and Dist.is_main_process():
        r.save_json(args.result)
    Dist.barrier()
    return EXIT_OK


def _recipe(args):
    from .recipe import Recipe

    return Recipe(train=args.train, dev=args.dev, test=args.test, output=args.output, scale=args.scale,
                  trials=args.trials, subset=args.subset, pruner=args.pruner, study_name=args.study_name,
                  storage=args.storage, score_range=tuple(args.score_range), loss=args.loss, model=args.model,
                  epochs=args.epochs, patience=getattr(args, "patience", 3), max_seq_length=args.max_seq_length,
                  seed=args.seed, device=args.device, train_size=args.train_size, progress=not args.no_progress,
                  worker=args.worker, compare_default=not getattr(args, "no_default", False),
                  search_epochs=getattr(args, "search_epochs", None), space=args.space)


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 done, 2 bad input, 130 interrupted, 1 a worker failed)
    (the ``python -m helpers`` command line; notebook 07)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.command == "train":
        return train_once(args)
    from . import distributed as Dist
    from . import workers as Workers
    from .config import setup
    from .data import DataError
    from .recipe import report
    from .settings import ConfigError
    from .tuning import StudyMismatch, finished

    try:
        Workers.check_workers(args.workers, args.storage)
        setup(scale=args.scale, device=args.device, seed=args.seed)
        recipe = _recipe(args)
        say = print if Dist.is_main_process() else (lambda *a, **k: None)  # torchrun: rank 0 reports
        say(f"checking the data and settings ({args.command}, scale {recipe.scale.name})...", file=sys.stderr)
        recipe.prepare()
    except KeyboardInterrupt:
        print("stopped before anything trained.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (DataError, ConfigError, StudyMismatch, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for w in recipe.warnings:
        say(f"warning: {w}", file=sys.stderr)
    workers = None
    if args.workers:  # N local worker processes run the search; this process finishes once they are done
        done = len(finished(recipe.study))
        say(f"starting {args.workers} search workers (logs in {recipe.output / 'workers'})...", file=sys.stderr)
        search_parser = next(a for a in parser._actions if a.dest == "command").choices["search"]
        trial_args = argparse.Namespace(**{**vars(args), "epochs": recipe.trial_base().epochs})  # each trial's
        workers = Workers.run_workers(search_parser, trial_args, recipe, progress=not args.no_progress)
        workers["new_trials"] = len(finished(recipe.study)) - done
        if workers["interrupted"] or any(workers["exit_codes"]):
            recipe.summary.update(status="interrupted" if workers["interrupted"] else "failed", stage="search")
            recipe.summary["search"]["workers"] = workers
            recipe.save_summary()
            if workers["interrupted"] or all(c in (0, EXIT_INTERRUPTED) for c in workers["exit_codes"]):
                print("Stopped with Ctrl-C: the study keeps every finished trial. Run the same command again to "
                      "resume it.", file=sys.stderr)
                return EXIT_INTERRUPTED
            print(f"error: {Workers.worker_failure(workers)}", file=sys.stderr)
            return EXIT_WORKER_FAILED
    summary = recipe.run(final=args.command == "recipe")
    if workers is not None:
        summary["search"]["workers"] = workers
        summary["search"]["new_trials"] = workers["new_trials"]
        summary["timings"]["search_s"] = workers["wall_s"]  # the workers' search, not this process's empty one
        summary["timings"]["total_s"] = round(summary["timings"].get("total_s", 0.0) + workers["wall_s"], 2)
        recipe.save_summary()
    say(report(summary))
    say(f"summary: {recipe.output / 'summary.json'}")
    if summary["status"] == "interrupted":
        print("Stopped with Ctrl-C: the study and the best model so far are kept. Run the same command again "
              "to resume the study.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

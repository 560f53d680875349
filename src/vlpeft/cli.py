"""The `vlpeft` command line. Each sub-command parses its flags and calls one plain function.

Errors a user can act on (`UserError`) print one line and exit with code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vlpeft.errors import UserError


def cmd_pretrain(args) -> int:
    from vlpeft.io import write_json
    from vlpeft.model.checkpoint import load_model
    from vlpeft.recipes.config import PretrainConfig
    from vlpeft.recipes.pretrain import evaluate_pretrained, pretrain

    out = Path(args.out)
    if (out / "config.json").exists() and args.if_missing:
        load_model(out)  # refuse a broken or foreign folder rather than silently reuse it
        print(f"{out}: checkpoint exists; pre-training skipped (--if-missing)")
        return 0
    if (out / "config.json").exists() and not args.force:
        raise UserError(f"{out}: already holds a checkpoint (use --force to replace it)")
    cfg = PretrainConfig(**{k: getattr(args, k) for k in scalar_fields(PretrainConfig) if getattr(args, k) is not None})
    from vlpeft.recipes.training import Diverged

    try:
        record = pretrain(cfg, out, progress=not args.quiet)
    except Diverged as e:
        raise UserError(f"pre-training diverged: {e}") from e
    print(f"pre-trained {cfg.preset} for {cfg.steps} steps in {record['train_seconds']:.0f} s -> {out}")
    if args.no_eval:
        return 0
    import torch

    from vlpeft.model.blip import Blip

    loaded = load_model(out)
    report = evaluate_pretrained(loaded.model, loaded.tokenizer, loaded.preprocess, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # the same architecture, untrained: what pre-training adds
    untrained = evaluate_pretrained(Blip(loaded.model.cfg).eval(), loaded.tokenizer, loaded.preprocess, seed=cfg.seed)
    write_json(out / "evaluation.json", {"pretrained": report, "untrained": untrained})
    keys = ["object_precision", "object_recall", "cider_d", "bleu4", "itc_i2t_recall@1", "itc_i2t_recall@5"]
    print(f"{'held-out figure':20} {'pre-trained':>12} {'untrained':>10}")
    for k in keys:
        if k in report:
            print(f"{k:20} {report[k]:12.3f} {untrained[k]:10.3f}")
    return 0


def cmd_caption(args) -> int:
    from vlpeft.recipes import infer

    given = [flag for flag, on in (("IMAGE files", args.images), ("--scenes N", args.scenes),
                                   ("--input FILE", args.input)) if on]
    if not given:
        raise UserError("caption: give IMAGE files or --scenes N (or --input FILE.jsonl)")
    if len(given) > 1:
        first = f"IMAGE files ({args.images[0]}, ...)" if args.images else given[0]
        raise UserError(f"caption: give {first} or {' or '.join(g for g in given if g != given[0])}, not both")
    _check_batch_flags(args)
    for flag, value, least in (("--beams", args.beams, 1), ("--max-new-tokens", args.max_new_tokens, 1),
                               ("--scenes", args.scenes, 0)):
        if value is not None and value < least:
            raise UserError(f"{flag} {value}: must be >= {least}")
    lines = infer.read_inputs(args.input, "caption") if args.input else None  # every line checked first
    options = {k: v for k, v in (("prompt", args.prompt), ("num_beams", args.beams),
                                 ("max_new_tokens", args.max_new_tokens)) if v is not None}
    p = infer.predictor(args.model, "caption", run=args.peft, options=options,
                        allow_other_base=args.allow_other_base)
    if lines is not None:
        infer.write_lines(infer.predict_lines(p, lines, "caption"), args.output)
        return 0
    if args.scenes:
        from vlpeft.data.scenes import generate_scenes

        scenes = {s.scene_id: s.image for s in generate_scenes(args.scenes, seed=args.seed, split="test")}
        names, decode = list(scenes), scenes.__getitem__
    else:
        names, decode = [str(path) for path in args.images], None
    captions = infer.predict(p, names, **({"decode": decode} if decode else {}))
    for name, text in zip(names, captions):
        print(f"{name}\t{(p.options.prompt + ' ' + text).strip()}")
    return 0


def cmd_answer(args) -> int:
    from vlpeft.recipes import infer

    if args.input and (args.image or args.question):
        raise UserError(f"answer: give IMAGE and QUESTION ({args.image}) or --input FILE.jsonl, not both")
    if not args.input and not (args.image and args.question):
        raise UserError("answer: give IMAGE \"QUESTION\" or --input FILE.jsonl")
    _check_batch_flags(args)
    lines = infer.read_inputs(args.input, "vqa") if args.input else None  # every line checked first
    options = {k: v for k, v in (("inference", args.inference),) if v is not None}
    p = infer.predictor(args.model, "vqa", run=args.peft, task=args.task, options=options,
                        allow_other_base=args.allow_other_base)
    if lines is not None:
        infer.write_lines(infer.predict_lines(p, lines, "answer"), args.output)
        return 0
    print(infer.predict(p, [args.image], [args.question])[0])
    return 0


def _check_batch_flags(args) -> None:
    """--output goes with --input, and never onto it."""
    if args.output and not args.input:
        raise UserError(f"--output {args.output}: goes with --input FILE.jsonl")
    if args.output and Path(args.output).resolve() == Path(args.input).resolve():
        raise UserError(f"--output {args.output}: is the --input file; name another")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), like every other vlpeft error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def cmd_methods(args) -> int:
    from vlpeft.model.checkpoint import load_model
    from vlpeft.peft import REGISTRY, get_method
    from vlpeft.peft.budget import default_placement, ladder

    cfg = load_model(args.model).model.cfg
    names = args.method or list(REGISTRY)
    table = {}
    for name in names:
        spec = get_method(name)
        table[name] = {"knob": spec.knob, "summary": spec.summary, "default_lr": spec.default_lr,
                       "default_placement": default_placement(name), "ladder": ladder(cfg, name)}
    if args.json:
        print(json.dumps({"model": str(args.model), "methods": table}, indent=1))
        return 0
    print(f"{'method':8} {'knob':12} {'value':>6} {'params':>12} {'% backbone':>11} {'lr':>7}  placement")
    for name, row in table.items():
        for r in row["ladder"]:
            value = "-" if r["value"] is None else r["value"]
            print(f"{name:8} {row['knob'] or '-':12} {value:>6} {r['budget']:>12,} {r['percent_of_backbone']:>10.3f}% "
                  f"{row['default_lr']:>7g}  {'+'.join(row['default_placement'])}")
    return 0


def _pairs(values: list[str] | None, flag: str, what: str) -> dict[str, str]:
    """['KEY=VALUE', ...] from a repeatable flag -> {KEY: VALUE}."""
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} {item!r}: expected {what}")
        if key.strip() in out:
            raise UserError(f"{flag}: {key.strip()!r} given twice")
        out[key.strip()] = value
    return out


def _task_options(values: list[str] | None) -> dict:
    """--task-option KEY=VALUE, the value read as YAML (3 -> int, true -> bool, text -> str)."""
    import yaml

    out = {}
    for key, text in _pairs(values, "--task-option", "KEY=VALUE, e.g. num_beams=3").items():
        try:
            out[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            out[key] = text
    return out


def cmd_finetune(args) -> int:
    from vlpeft.recipes.finetune import FinetuneConfig, finetune
    from vlpeft.recipes.training import Diverged

    out = Path(args.out)
    if (out / "metrics.json").exists() and not args.force:
        raise UserError(f"{out}: already holds a finished run (use --force to replace it)")
    if out.is_dir() and any(out.iterdir()) and not is_run_folder(out):
        raise UserError(f"{out}: not empty and not a vlpeft run folder (no peft_config.json); finetune writes "
                        "only into an empty or new folder or over an earlier run: choose another --out")
    try:
        options = json.loads(args.options) if args.options else {}
    except json.JSONDecodeError as e:
        raise UserError(f"--options: not valid JSON ({e.msg})") from e
    if not isinstance(options, dict):
        raise UserError("--options: expected a JSON object of method config fields")
    given = {k: getattr(args, k) for k in scalar_fields(FinetuneConfig) if getattr(args, k) is not None}
    cfg = FinetuneConfig(method_options=options, data_size=args.data_size,
                         paths=_pairs(args.data, "--data", "KEY=PATH"),
                         task_options=_task_options(args.task_option), **given)
    try:
        m = finetune(cfg, out, progress=not args.quiet)
    except Diverged as e:
        raise UserError(f"training diverged: {e}") from e
    knob = f" {m['knob']}={m['knob_value']}" if m["knob"] is not None else ""  # full, frozen, bitfit, ia3: none
    print(f"{m['task']} {m['method']}{knob} data={m['data_size']} seed={m['seed']}: "
          f"test {m['metric']} {m['test_score']:.4g} (best val {m['best_val_score']:.4g}), "
          f"{m['trainable_params']:,} trainable params, {m['train_seconds']:.0f} s -> {out}")
    c = m["convergence"]
    state = {"converged": "converged", "not_trained": "nothing trained", "still_improving": "NOT converged: still "
             "improving", "flat_at_start": "NOT converged: flat at its start while the loss falls",
             "too_short": "NOT converged: too few evaluations to judge"}[c["state"]]
    how = {"converged": "stopped early", "cap": "stopped at the cap", "length": "a fixed length",
           "untrained": "nothing to train"}.get(m["stopped_by"], m["stopped_by"])
    print(f"  {state} ({how}); best validation at step {m['steps_to_best']} of {m['steps_done']}: {c['reason']}")
    return 0


def is_run_folder(folder: Path) -> bool:
    """A folder vlpeft finetune wrote (its PEFT config), is writing (its holder file), or began: a run
    that failed after logging leaves only its TensorBoard events."""
    from vlpeft.lock import HOLDER

    try:
        config = json.loads((folder / "peft_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None
    entries = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return (isinstance(config, dict) and config.get("format") == "vlpeft-peft") or \
        (folder / HOLDER.format("finetune")).exists() or \
        (bool(entries) and all(name.startswith("events.out.tfevents.") for name in entries))


def cmd_evaluate(args) -> int:
    from vlpeft.recipes.evaluate import evaluate_run

    r = evaluate_run(args.model, args.peft, args.task, allow_other_base=args.allow_other_base)
    other = "" if r["same_base"] else " on another base checkpoint than the run adapted"
    print(
        f"{r['task']} {r['method']}: test {r['metric']} {r['test_score']:.6g}{other} (recorded "
        f"{r['recorded_test_score']:.6g})"
    )
    return 0


def cmd_export(args) -> int:
    from vlpeft.recipes.export import export_run

    r = export_run(args.run, args.out, args.format, model=args.model, force=args.force,
                   allow_other_base=args.allow_other_base)
    print(f"{r['method']} run -> {r['format']} ({r['architecture']}): {r['out']} ({', '.join(r['files'])})")
    if r["format"] == "peft":
        print(f"  load: peft.PeftModel.from_pretrained(transformers.{r['architecture']}.from_pretrained("
              f"{r['base']!r}), {r['out']!r})")
    else:
        print(f"  load: transformers.{r['architecture']}.from_pretrained({r['out']!r}); "
              f"transformers.BlipProcessor.from_pretrained({r['out']!r})")
    return 0


def cmd_tasks(args) -> int:
    from vlpeft.tasks import KINDS, TASKS

    if getattr(args, "tasks_command", None) == "check":
        return cmd_tasks_check(args)
    print(f"{'task':16} {'kind':8} {'relation to pre-training':26} description")
    for t in TASKS.values():
        print(f"{t.name:16} {t.kind:8} {t.relation:26} {t.description}")
        if t.paths:
            print(f"{'':16} {'':8} {'':26} files (--data KEY=PATH): {', '.join(t.paths + t.optional_paths)}")
    print(
        "\nor your own data: a task file (YAML) given as --task my-task.yaml; check it with `vlpeft tasks check "
        "my-task.yaml`"
    )
    print("kinds: " + "; ".join(f"{k.name}: {k.summary}" for k in KINDS.values()))
    return 0


def cmd_tasks_check(args) -> int:
    from vlpeft.tasks.check import check_task, format_check

    if args.max_images < 0:
        raise UserError(f"--max-images {args.max_images}: must be >= 0 (0 = every image)")
    from vlpeft.model.checkpoint import pretrain_record, scene_seed_of

    scene_seed = scene_seed_of(pretrain_record(args.model) if args.model else None, args.scene_seed)
    report = check_task(args.task, _pairs(args.data, "--data", "KEY=PATH"), scene_seed, args.max_images)
    print(json.dumps(report, indent=1) if args.json else format_check(report))
    return 0


def cmd_study(args) -> int:
    from vlpeft.study import dry_run, load_spec, run_study
    from vlpeft.study.runner import dry_run_checks
    from vlpeft.study.spec import with_executor

    spec = with_executor(load_spec(args.spec, args.sets or ()), kind=args.executor, workers=args.workers,
                         threads=args.threads, address=args.address, gpus=args.gpus)
    if args.address and spec.executor.kind != "ray":
        raise UserError("--address needs --executor ray")
    if args.dry_run:
        from vlpeft.study.preflight import noise_text, validation_noise

        cells = dry_run(spec)
        for c in cells:
            print(f"{c['id']}  ({c['examples']} training examples)")
        checks = dry_run_checks(spec, cells)
        for c in checks:
            print(f"{c['id']}  ({c['examples']} training examples; length check: after the grid, {spec.length_check}x "
                  f"as long as its run {c['of']})")
        print(f"{len(cells)} cells" + (f" and {len(checks)} length-check cells" if checks else ""))
        for r in validation_noise(spec):  # the frozen checkpoint on each task's validation split
            print(noise_text(r))
        return 0
    if not args.out:
        raise UserError("study: give --out, the study folder (results.sqlite, reports, runs/)")
    summary = run_study(spec, args.out, quiet=args.quiet)
    failed = f", {summary['failed']} FAILED (see {args.out}/report.md)" if summary["failed"] else ""
    print(f"study {spec.name}: {summary['done']}/{summary['total']} runs done{failed}; ran {summary['ran']} "
          f"in {summary['grid_seconds']:.0f} s (whole command {summary['seconds']:.0f} s) -> {args.out}/report.html, "
          f"report.md, results.sqlite, results.csv")
    return 1 if summary["failed"] else 0


def cmd_report(args) -> int:
    from vlpeft.analysis import report

    if not 0 < args.delta < 1:
        raise UserError(f"--delta {args.delta}: must be a fraction in (0, 1), e.g. 0.05 for 5 %")
    out = report.build(args.dir, delta=args.delta)
    s = out["setup"]
    runs = ", ".join(f"{n} {k}" for k, n in sorted(s["status"].items()))
    print(f"{args.dir}/report.html, report.md: {s['runs']} runs ({runs}); {len(out['cells'])} cells with finished "
          f"runs, {len(out['verdicts'])} task x method verdict rows")
    return 0


def cmd_advise(args) -> int:
    if args.max_params is not None and args.max_params <= 0:
        raise UserError(f"--max-params {args.max_params}: must be positive")
    if args.validate:
        return advise_validate(args)
    if not args.task:
        raise UserError("advise: --task is required (a built-in name or a task file)")
    if args.model:
        return advise_before_grid(args)
    if args.from_dirs:
        raise UserError("advise: --from goes with --model (advice for a new task before its grid); "
                        "advice from one study is `vlpeft advise DIR --task T --data-size N`")
    if not args.dir:
        raise UserError("advise: give a study folder (advice from its results) or --model CKPT (a new task, "
                        "before any grid)")
    if args.data_size is None:
        raise UserError("advise DIR: --data-size is required (the training examples you have)")
    from vlpeft.analysis.advise import advice_text, advise
    from vlpeft.analysis.results import aggregate, load_runs

    cells = aggregate(load_runs(args.dir))
    print(advice_text(advise(cells, args.task, args.data_size, args.max_params)))
    return 0


def advise_validate(args) -> int:
    from vlpeft.analysis import predict

    if not args.from_dirs:
        raise UserError("advise --validate: give the studies to validate on with --from DIR (repeat for several)")
    points = [p for folder in args.from_dirs for p in predict.study_points(folder)]
    print(predict.loo_text(points))
    return 0


def advise_before_grid(args) -> int:
    from vlpeft.analysis.predict import require_study
    from vlpeft.study import preflight

    if args.dir:
        raise UserError(f"advise --model: give earlier studies with --from, not as a folder ({args.dir})")
    for folder in args.from_dirs or []:  # before the measurement: a wrong folder costs nothing
        require_study(folder)
    a = preflight.assess(args.model, args.task, threads=args.threads)
    print(preflight.advice_text(preflight.advise_task(a, args.from_dirs or [], args.data_size, args.max_params)))
    return 0


SCALARS = (str, int, float, bool)


def scalar_fields(cls) -> tuple[str, ...]:
    """The fields of config dataclass `cls` whose type (X or X | None) is a str, int, float or bool: each
    becomes a --flag. The others (dicts, data sizes) have flags of their own, parsed by hand."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in dataclasses.fields(cls) if _scalar(hints[f.name]) is not None)


def _scalar(hint):
    import typing

    kind = next((a for a in typing.get_args(hint) if a is not type(None)), hint)  # X | None -> X
    return kind if kind in SCALARS else None


def config_flags(parser: argparse.ArgumentParser, cls, names: tuple[str, ...]) -> None:
    """One --flag per field of the config dataclass `cls` named in `names`: its type from the type
    hint, its choices and help from the field's metadata, required when the field has no default, the
    default shown (None: not given, the config's default applies)."""
    import dataclasses
    import typing

    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for name in names:
        f, kind = fields[name], _scalar(hints[name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if f.default is dataclasses.MISSING else f.default
        shown = "" if default is None else f" (default: {default})"
        how = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
        parser.add_argument(f"--{name.replace('_', '-')}", required=required, choices=f.metadata.get("choices"),
                            default=None, help=f.metadata.get("help", "").replace("%", "%%") + shown, **how)


def _inference_flags(s, line_keys: str) -> None:
    """The flags `caption` and `answer` share: the run, the batch form, the base-checkpoint override."""
    s.add_argument("--peft", default=None, metavar="RUN", help="a run folder (vlpeft finetune, or a study's "
                   "runs/<cell>): its PEFT weights and task settings")
    s.add_argument("--input", default=None, metavar="FILE.jsonl",
                   help=f"batch form: one JSON object per line with its {line_keys} (paths relative to the file); "
                        "other keys are copied to the output")
    s.add_argument("--output", default=None, metavar="FILE.jsonl", help="with --input: where the lines go, each "
                   "with its prediction (written whole at the end; default: stdout as they come)")
    s.add_argument("--allow-other-base", action="store_true",
                   help="use the run on another base checkpoint than the one it adapted")


def build_parser() -> argparse.ArgumentParser:
    from vlpeft.recipes.config import FinetuneConfig, PretrainConfig

    p = _Parser(prog="vlpeft", description="PEFT studies on BLIP-style vision-language models")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("pretrain", help="pre-train a tiny BLIP on synthetic scenes (ITC + ITM + LM)")
    s.add_argument("--out", required=True, help="checkpoint folder to write")
    config_flags(s, PretrainConfig, scalar_fields(PretrainConfig))
    existing = s.add_mutually_exclusive_group()
    existing.add_argument("--force", action="store_true", help="replace an existing checkpoint in --out")
    existing.add_argument("--if-missing", action="store_true", help="do nothing when --out already holds a checkpoint")
    s.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("caption", help="caption images with a checkpoint, or with a fine-tuning run on it (--peft)")
    s.add_argument("--model", required=True, help="tiny (shipped with vlpeft), a checkpoint folder (vlpeft or "
                   "transformers BLIP) or a hub id")
    s.add_argument("images", nargs="*", help="image files")
    s.add_argument("--scenes", type=int, default=0, help="caption N held-out synthetic scenes instead")
    s.add_argument("--seed", type=int, default=0, help="scene seed for --scenes")
    _inference_flags(s, "image")
    s.add_argument("--prompt", default=None,
                   help='caption prompt, e.g. "a picture of" (default: the run\'s, else none)')
    s.add_argument("--beams", type=int, default=None, help="beam size, 1 = greedy (default: the run's, else 1)")
    s.add_argument("--max-new-tokens", type=int, default=None, help="most tokens per caption (default: the run's, "
                   "else 30)")
    s.set_defaults(func=cmd_caption)

    s = sub.add_parser("answer", help="answer a question about an image with a checkpoint, or with a fine-tuning "
                       "run on it (--peft)")
    s.add_argument("--model", required=True, help="tiny (shipped with vlpeft), a checkpoint folder (vlpeft or "
                   "transformers BLIP) or a hub id")
    s.add_argument("image", nargs="?", help="an image file")
    s.add_argument("question", nargs="?", help="a question about it")
    _inference_flags(s, "image and question")
    s.add_argument("--task", default=None, help="a VQA task whose candidate answers are ranked (default: the run's; "
                   "without a run or a task, answers are generated)")
    s.add_argument("--inference", choices=("rank", "generate"), default=None,
                   help="rank the task's candidate answers (BLIP) or generate one (default: the run's, else rank)")
    s.set_defaults(func=cmd_answer)

    s = sub.add_parser("finetune", help="fine-tune one cell: model x task x method x budget x data size x seed")
    s.add_argument("--data", action="append", metavar="KEY=PATH", help="a data file of a task that takes paths "
                   "(coco-caption: karpathy_json, image_root; vqav2: train_questions, ...); repeatable")
    s.add_argument("--task-option", action="append", metavar="KEY=VALUE", help="an option of the task's kind "
                   "(caption: prompt, num_beams, max_new_tokens; vqa: inference, rank_k); repeatable")
    s.add_argument("--options", help='other method config fields as JSON, e.g. \'{"placement": ["text_decoder"]}\'')
    s.add_argument("--data-size", default="1.0", help="fraction (0.1, 10%%) or count (200) of training examples")
    s.add_argument("--out", required=True, help="run folder to write")
    config_flags(s, FinetuneConfig, scalar_fields(FinetuneConfig))
    s.add_argument("--force", action="store_true", help="replace a finished run in --out")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser("evaluate", help="re-score a run's saved PEFT weights on its task's test split")
    s.add_argument("--model", required=True, help="the checkpoint the run fine-tuned")
    s.add_argument("--peft", required=True, help="the run folder")
    s.add_argument("--task", help="task name or task file (checked against the run's)")
    s.add_argument("--allow-other-base", action="store_true",
                   help="score the PEFT weights on a base checkpoint other than the one the run adapted")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("export", help="write a run for the standard libraries: a Hugging Face peft adapter (lora, "
                       "ia3) or a transformers BLIP checkpoint with the weights folded in (lora, ia3, bitfit, full)")
    s.add_argument("run", help="the run folder (vlpeft finetune, or a study's runs/<cell>)")
    s.add_argument("--format", required=True, choices=("peft", "merged"),
                   help="peft: adapter_config.json + adapter_model.safetensors for peft.PeftModel; merged: "
                        "config.json, model.safetensors and processor files for transformers' BLIP classes")
    s.add_argument("--out", required=True, help="folder to write (new or empty)")
    s.add_argument("--model", default=None, help="the base checkpoint (default: the one the run recorded)")
    s.add_argument("--allow-other-base", action="store_true",
                   help="export on a base checkpoint other than the one the run adapted")
    s.add_argument("--force", action="store_true", help="replace a non-empty --out")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("tasks", help="list the built-in tasks; `tasks check TASK` reads one and says what it holds")
    s.set_defaults(func=cmd_tasks)
    tsub = s.add_subparsers(dest="tasks_command", parser_class=_Parser)
    c = tsub.add_parser(
        "check", help="load a task (built-in name or task file), decode its images, print what was read"
    )
    c.add_argument("task", help="built-in task name or task file (YAML)")
    c.add_argument("--data", action="append", metavar="KEY=PATH", help="data files of coco-caption / vqav2; repeatable")
    c.add_argument("--model", help="checkpoint whose pre-training seed the scenes tasks use")
    c.add_argument("--scene-seed", type=int, help="synthetic-scene seed (scenes tasks; default: the --model's, else 0)")
    c.add_argument("--max-images", type=int, default=0, help="decode only the first N images (0 = every image)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_tasks)

    s = sub.add_parser("study", help="run (or resume) a whole study grid: the main job")
    s.add_argument(
        "spec",
        nargs="?",
        default="quick",
        help="a preset (quick, medium, full, paper-blip: shipped in vlpeft/configs/) or a YAML file "
             "(default: quick)",
    )
    s.add_argument(
        "--out", help="study folder (results.sqlite, results.csv, report.md, runs/); not needed with --dry-run"
    )
    s.add_argument("--executor", choices=["local", "ray"], help="override the spec's executor")
    s.add_argument("--workers", type=int, help="local worker processes (0 = in this process)")
    s.add_argument("--threads", type=int, help="torch threads per run")
    s.add_argument("--address", help="ray cluster address (default: start a local Ray instance)")
    s.add_argument("--gpus", type=float, help="ray: GPUs per run (0.25: four runs share one); local: GPUs to "
                                              "spread the workers over, one per worker in turn")
    s.add_argument("--set", action="append", dest="sets", metavar="KEY=VALUE",
                   help="override any key of the spec before it is checked, dotted, the value as YAML; repeatable "
                   "(e.g. --set training.patience=5 --set seeds=[0,1,2] "
                   "--set task_training.scenes-caption.max_steps=900)")
    s.add_argument("--dry-run", action="store_true", help="list the cells and check them; run nothing")
    s.add_argument("--quiet", action="store_true", help="no per-run lines")
    s.set_defaults(func=cmd_study)

    s = sub.add_parser("report", help="rebuild a study's report (report.html, report.md, figures/) from results.sqlite")
    s.add_argument("dir", help="study folder")
    s.add_argument(
        "--delta",
        type=float,
        default=0.05,
        help="equivalence margin, as a fraction of the task's best score (default 0.05)",
    )
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("advise", help="recommend a method and budget: from a study's results (DIR), or for a new "
                       "task before any grid (--model)")
    s.add_argument("dir", nargs="?", help="study folder (advice from its results)")
    s.add_argument("--task", help="the task: a built-in name or a task file of your own data")
    s.add_argument("--data-size", help="training examples you have: a count (2000) or a fraction of the task's "
                   "training pool (0.1, 10%%); with --model, default: the whole pool")
    s.add_argument("--max-params", type=int, help="most trainable parameters you accept")
    s.add_argument("--model", help="a new task, before any grid: measure its consistency with this checkpoint's "
                   "pre-training and predict what will matter")
    s.add_argument("--from", dest="from_dirs", action="append", metavar="DIR",
                   help="with --model: an earlier study folder to predict from (repeat for several)")
    s.add_argument("--threads", type=int, help="with --model: torch threads")
    s.add_argument("--validate", action="store_true", help="with --from: leave one task out: predict each task's "
                   "sensitivities from the other tasks and compare with what its grid measured")
    s.set_defaults(func=cmd_advise)

    s = sub.add_parser("methods", help="list PEFT methods with exact trainable parameters at each knob value")
    s.add_argument("--model", required=True, help="tiny (shipped with vlpeft) or a checkpoint folder")
    s.add_argument("--method", action="append", help="only this method (repeatable)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_methods)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a job scheduler's stop), raised where the process is, so it shuts down as after
    Ctrl-C: workers stopped, the store closed, a study resumable."""


def _terminated(signum, frame) -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not break the shutdown
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    parser = build_parser()
    args = parser.parse_args(argv)
    own = threading.current_thread() is threading.main_thread()  # handlers can only be set there
    before = signal.signal(signal.SIGTERM, _terminated) if own else None
    try:
        return args.func(args) or 0
    except UserError as e:
        if args.debug:
            raise
        print(f"vlpeft: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("vlpeft: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the shutdown
        print("vlpeft: interrupted", file=sys.stderr)
        return 130
    finally:
        if own:
            signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    sys.exit(main())

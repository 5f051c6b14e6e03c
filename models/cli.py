"""``restore``: reference training and inference of the prompt-driven restorers on pirs shards."""

from __future__ import annotations

import argparse
import json
import sys

from pirs.degrade.fs import add_storage_args


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a method on pirs shards (resumes from the newest checkpoint in --out)",
                       description="Train a method on pirs shards with accelerate. Re-running the same command "
                                   "resumes from the newest checkpoint in --out, exactly.")
    p.add_argument("--method", required=True, help="method name (see `restore methods`)")
    p.add_argument("--data", required=True, help="pirs shard folder, a local path or URL (s3://bucket/shards)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, validation images")
    p.add_argument("--config", default=None, help="config name (tiny, sd15, ...) or YAML path (default: tiny "
                                                  "without --base, else sd15)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable)")
    p.add_argument("--base", default=None, help="local folder with the base model's weights (diffusers layout)")
    p.add_argument("--stage", type=int, default=None,
                   help="training stage of a two-stage method (Diff-Restorer: 1 diffusion and control, 2 decoder; "
                        "stage 2 needs --set stage1_checkpoint=RUN); same as --set stage=N")
    p.add_argument("--max-steps", type=int, default=1000, help="optimizer steps in total (default 1000)")
    p.add_argument("--batch-size", type=int, default=4, help="samples per micro-batch (default 4)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--learning-rate", type=float, default=None, help="AdamW learning rate (default: the config's)")
    p.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"], help="accelerate's setting")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (default 500)")
    p.add_argument("--validate-every", type=int, default=0, help="steps between validation images (0: never)")
    p.add_argument("--ema-decay", type=float, default=0.0, help="EMA of the trainable weights (0: off)")
    p.add_argument("--allow-empty-text", action="store_true",
                   help="train even if records leave a caption the method reads empty (XPSR: caption_low)")
    p.add_argument("--max-grad-norm", type=float, default=None,
                   help="clip the gradients' norm (default: the config's max_grad_norm, e.g. XPSR's 1.0; else off)")
    p.add_argument("--log-every", type=int, default=10, help="steps between log lines (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of data order, noise and timesteps (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_storage_args(p)


def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="restore every record of a shard folder into KEY.png files and run.json",
                       description="Restore every record of a shard folder with a trained checkpoint; writes "
                                   "KEY.png per record and run.json, which `bench evaluate` reads.")
    p.add_argument("--checkpoint", required=True, help="run folder (newest checkpoint) or one checkpoint folder")
    p.add_argument("--input", required=True, help="pirs shard folder (a test set), a local path or URL")
    p.add_argument("--out", required=True, help="predictions folder")
    p.add_argument("--method", default=None, help="check that the checkpoint is of this method")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise (default 0)")
    p.add_argument("--batch-size", type=int, default=1, help="latent tiles per forward pass (default 1)")
    p.add_argument("--limit", type=int, default=None, help="restore only the first N records")
    p.add_argument("--overwrite", action="store_true", help="replace predictions made with other settings in --out")
    g = p.add_argument_group("inference protocol (default: the method config's, which cites its sources)")
    g.add_argument("--steps", type=int, default=None, help="sampling steps")
    g.add_argument("--sampler", default=None, choices=["ddim", "ddpm", "unipc", "dpmsolver", "flow-euler"],
                   help="diffusers scheduler")
    g.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale (1: off)")
    g.add_argument("--added-prompt", default=None, help="text appended to every semantic prompt")
    g.add_argument("--negative-prompt", default=None, help="prompt of the unconditional branch")
    g.add_argument("--tile-size", type=int, default=None, help="latent tile side in latent pixels (x8 image px)")
    g.add_argument("--tile-overlap", type=int, default=None, help="overlap of latent tiles in latent pixels")
    g.add_argument("--vae-encoder-tile", type=int, default=None, help="VAE encoder tile side in latent pixels")
    g.add_argument("--vae-decoder-tile", type=int, default=None, help="VAE decoder tile side in latent pixels")
    g.add_argument("--vae-tile-overlap", type=int, default=None, help="overlap of VAE tiles in latent pixels")
    g.add_argument("--color-fix", default=None, choices=["adain", "wavelet", "none"],
                   help="colour correction towards the LQ (StableSR/PASD/XPSR formulas)")
    g.add_argument("--process-size", type=int, default=None,
                   help="upsample images whose short side is smaller to this size, restore, resize back (0: never)")
    g.add_argument("--fit", default=None, choices=["pad", "resize"],
                   help="reach a multiple of the latent grid by reflect padding (cropped after) or by resizing")
    p.add_argument("--base", default=None, help="local base-model folder (default: the one the run trained on)")
    p.add_argument("--prompt", dest="restoration_prompt", default=None,
                   help="restoration prompt for every image (default: each record's)")
    p.add_argument("--semantic-prompt", default=None, help="semantic prompt for every image (default: each record's)")
    p.add_argument("--blind", action="store_true", help='"Remove all degradation" with an empty semantic prompt')
    p.add_argument("--ema", action="store_true", help="use the EMA weights if the run kept them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_storage_args(p)


def cmd_train(a) -> int:
    from .components import WeightsMissing
    from .data import DataError
    from .method import ConfigError
    from .train import TrainConfig, train

    config = a.config or ("sd15" if a.base else "tiny")
    overrides = list(a.overrides) + ([f"stage={a.stage}"] if a.stage is not None else [])
    tc = TrainConfig(method=a.method, data=a.data, out=a.out, config=config, overrides=overrides, base=a.base,
                     max_steps=a.max_steps, batch_size=a.batch_size, grad_accum=a.grad_accum,
                     learning_rate=a.learning_rate, mixed_precision=a.mixed_precision,
                     checkpoint_every=a.checkpoint_every, validate_every=a.validate_every, ema_decay=a.ema_decay,
                     max_grad_norm=a.max_grad_norm, allow_empty_text=a.allow_empty_text,
                     log_every=a.log_every, seed=a.seed, progress=not a.quiet)
    try:
        r = train(tc)
    except (WeightsMissing, DataError, ConfigError, KeyError, ValueError) as e:
        print(f"restore train: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nrestore train: interrupted; run the same command to resume from the newest checkpoint in "
              f"{a.out}", file=sys.stderr)
        return 130
    out = a.out.rstrip("/") or a.out
    if "loss" not in r:  # no step ran: the run already had --max-steps steps
        print(f"{out} is already at step {r['start']} of --max-steps {r['steps']}: nothing to train (raise "
              f"--max-steps to go on); checkpoints in {out}/")
        return 0
    resumed = f" (resumed at step {r['start']})" if r["start"] else ""
    print(f"trained {a.method} to step {r['step']}{resumed}, last loss {r['loss']:.4f}; trainable "
          f"{r['parameters']['trainable']:,} of {r['parameters']['total']:,} parameters; checkpoints in {out}/")
    return 0


def cmd_predict(a) -> int:
    from .components import WeightsMissing
    from .data import DataError
    from .predict import PredictConfig, predict

    protocol = {k: getattr(a, k) for k in ("steps", "sampler", "guidance_scale", "added_prompt", "negative_prompt",
                                           "tile_size", "tile_overlap", "vae_encoder_tile", "vae_decoder_tile",
                                           "vae_tile_overlap", "color_fix", "process_size", "fit")}
    pc = PredictConfig(checkpoint=a.checkpoint, input=a.input, out=a.out, method=a.method, seed=a.seed,
                       batch_size=a.batch_size, base=a.base, restoration_prompt=a.restoration_prompt,
                       semantic_prompt=a.semantic_prompt, blind=a.blind, use_ema=a.ema, progress=not a.quiet,
                       overwrite=a.overwrite, limit=a.limit, **protocol)
    try:
        run = predict(pc)
    except (WeightsMissing, DataError, FileNotFoundError, KeyError, ValueError) as e:
        print(f"restore predict: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    out = a.out.rstrip("/") or a.out
    print(f"wrote {run['count']} predictions and run.json to {out}/ ({run['method']}, step {run['step']}, "
          f"{run['sampler']} {run['steps']} steps, tiles {run['tile_size']}/{run['tile_overlap']}, colour fix "
          f"{run['color_fix']}, seed {run['seed']}; {run['resumed']} kept from an earlier run)")
    from pirs.benchmark.cli import score_hint

    print(f"score     {score_hint(out, a.input, run['method'])}")
    return 0


def cmd_methods(a) -> int:
    from .method import configs_dir, get_method, load_config, method_names

    rows = []
    for name in method_names():
        cls = get_method(name)
        configs = sorted(p.stem for p in configs_dir(name).glob("*.yaml"))
        counts = cls.build(load_config(name, "tiny")).parameter_counts() if a.counts else None
        rows.append({"method": name, "configs": configs, "doc": (cls.__doc__ or "").strip().splitlines()[0],
                     "tiny_parameters": counts})
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        extra = f"  tiny: {r['tiny_parameters']}" if r["tiny_parameters"] else ""
        print(f"{r['method']:14s} configs: {', '.join(r['configs'])}  {r['doc']}{extra}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The ``restore`` argument parser."""
    parser = argparse.ArgumentParser(prog="restore", description="pirs restore: reference training and inference "
                                     "of prompt-driven diffusion restorers on pirs shards")
    parser.add_argument("--debug", action="store_true", help="traceback of an unexpected error (or PIRS_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _predict_parser(sub)
    p = sub.add_parser("methods", help="list the methods and their configs",
                       description="List the methods, their shipped configs and (with --counts) the tiny "
                                   "configuration's trainable and frozen parameter counts.")
    p.add_argument("--counts", action="store_true", help="build each tiny model and count its parameters")
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``restore`` command."""
    a = make_parser().parse_args(argv)
    from pirs.degrade.fs import parse_storage_options, run_cli, set_storage_options

    if getattr(a, "storage_options", None) is not None:
        try:
            set_storage_options(parse_storage_options(a.storage_options))
        except ValueError as e:
            print(f"restore {a.command}: error: {e}", file=sys.stderr)
            return 2
    return run_cli(f"restore {a.command}", {"train": cmd_train, "predict": cmd_predict,
                                             "methods": cmd_methods}[a.command], a)


if __name__ == "__main__":
    sys.exit(main())

"""The ``dcdgan`` command: parse arguments, load the config, call one library function."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
from pathlib import Path

from dcdgan.errors import UserError

EXPORTED_SUFFIXES = (".onnx", ".xml", ".pt2", ".pte", ".tflite")
DESCRIPTION = "dcdgan: compress pix2pix/CycleGAN generators with Discriminator-Cooperated Distillation (DCD, CVPR 2023)."


def cmd_distill(args: argparse.Namespace) -> int:
    from dcdgan.checkpoint import load_newest
    from dcdgan.config import apply_overrides, config_from_dict, help_text, load_config, to_yaml
    from dcdgan.distill import distill
    from dcdgan.runs import default_run_dir, last_checkpoint, require_run_dir

    if args.help_config:
        print(help_text())
        return 0
    source, overrides = config_source(args.config, args.overrides)
    if args.resume:
        if source is not None:  # it would be ignored: the run continues with its own config
            raise UserError(f"--resume {args.resume} continues with the run's own config: drop {source} (key=value overrides still apply)")
        if args.run_dir and Path(args.run_dir).resolve() != Path(args.resume).resolve():
            raise UserError(f"--resume {args.resume} continues in that run's directory: drop --run-dir {args.run_dir}")
        run_dir = Path(args.resume)
        require_run_dir(run_dir)
        _, state = load_newest(last_checkpoint(run_dir).parent)  # an unreadable newest: the previous one (distill says so)
        cfg = apply_overrides(config_from_dict(state["config"]), overrides)  # distill checks it against the checkpoint first
    else:
        cfg = load_config(source, overrides)
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    distill(cfg, run_dir, resume=bool(args.resume), quiet=args.quiet)
    return 0


def config_source(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """(config file or recipe, overrides): ``dcdgan distill key=value`` has no config file, only overrides."""
    overrides = list(overrides)
    if config and "=" in config and not Path(config).exists():
        return None, [config, *overrides]
    return config, overrides


def cmd_check(args: argparse.Namespace) -> int:
    from dcdgan.config import load_config
    from dcdgan.scan import check_command

    source, overrides = config_source(args.config, args.overrides)
    cfg = load_config(source, overrides)
    return check_command(cfg.data, cfg.eval.final, quiet=args.quiet)


def cmd_eval(args: argparse.Namespace) -> int:
    from dcdgan.config import parse_override
    from dcdgan.evaluate import Segmentation, evaluate_run
    from dcdgan.metrics.lpips import load_lpips
    from dcdgan.metrics.segmentation import SegmentationScore, load_segmenter
    from dcdgan.report import format_table, write_report

    segmentation = None
    if args.segmenter:
        if not args.labels:
            raise UserError("--segmenter needs --labels DIR (integer label maps named like the test images)")
        segmentation = Segmentation(SegmentationScore(load_segmenter(args.segmenter), args.num_classes, args.ignore_index), Path(args.labels))
    data_overrides: dict = {}
    for item in args.set:
        parsed = parse_override(item)
        if set(parsed) != {"data"}:
            raise UserError(f"--set {item}: only data.* keys can change for evaluation")
        data_overrides.update(parsed["data"])
    run, exported = args.run, args.model
    if Path(run).suffix in EXPORTED_SUFFIXES:  # ``dcdgan eval student.onnx``: the run is the folder it sits in
        from dcdgan.conversion import run_dir_of

        exported, run = run, run_dir_of(Path(run).resolve())
        if run is None:
            raise UserError(f"{args.run}: not inside a run directory; use dcdgan eval RUN --model {args.run}")
    metrics = evaluate_run(
        run,
        split=args.split,
        ref=args.ref,
        ref_dir=args.ref_dir,
        inception_choice=args.inception,
        fid="skip" if args.no_fid else "require",
        segmentation=segmentation,
        lpips_model=load_lpips(args.lpips_backbone, args.lpips_net) if args.lpips_backbone else None,
        data_overrides=data_overrides,
        max_images=args.max_images,
        batch_size=args.batch_size,
        quiet=args.json,
        exported=exported,
    )
    write_report(metrics["run"])
    print(json.dumps(metrics, indent=2) if args.json else format_table(metrics))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from dcdgan.data import folder_dataset
    from dcdgan.evaluate import batches, image_features
    from dcdgan.metrics.fid import ReferenceStats, save_stats
    from dcdgan.metrics.inception import load_inception

    inception = load_inception(args.inception)
    loader = batches(folder_dataset(args.images, args.channels, args.size), args.batch_size)
    stats = ReferenceStats.from_features(image_features(inception, loader, desc="Inception features", quiet_bar=args.json), keep_features=not args.no_features)
    save_stats(args.out, stats)
    summary = {"out": str(args.out), "n_images": len(stats.features) if stats.features is not None else None, "dims": len(stats.mu), "inception": inception.source}
    print(json.dumps(summary) if args.json else f"wrote {args.out}: mu {stats.mu.shape}, sigma {stats.sigma.shape} ({inception.source})")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from dcdgan.evaluate import size_of
    from dcdgan.nets import GeneratorSpec, build_generator
    from dcdgan.nets.generators import DEFAULT_NGF

    ngf = args.ngf or DEFAULT_NGF[args.netG]  # the width bench gives the same bare name
    gen = build_generator(GeneratorSpec(args.netG, ngf, args.input_nc, args.output_nc))
    sizes = size_of(gen, args.input_nc, args.size)
    if args.json:
        print(json.dumps(sizes))
    else:
        print(f"{args.netG} ngf {ngf} at {args.size}x{args.size}: {sizes['params']:,} params, {sizes['macs'] / 1e9:.3f} GMACs")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dcdgan.demo import serve

    serve(args.models, host=args.host, port=args.port, backend=args.backend, device=args.device, runner=args.runner, precision=args.precision)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    which = "teacher" if args.teacher else "student"
    if args.format == "web":
        from dcdgan.web import export_web

        result = export_web(args.model, args.out, args.precision, which, quiet=args.json)
    else:
        from dcdgan.export import export_model

        sizes = () if args.size is None else (args.size, args.size + 8)
        result = export_model(args.model, args.format, args.out, args.precision, which, sizes=sizes, quiet=args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from dcdgan.backends import load_runner
    from dcdgan.translate import translate_files

    runner = load_runner(args.model, args.backend, args.precision, "teacher" if args.teacher else "student", args.device, args.threads, args.runner)
    result = translate_files(runner, args.input, args.output, args.batch_size, quiet=args.quiet)
    skipped = f"; skipped {len(result.skipped)} unreadable file(s)" if result.skipped else ""
    how = f" {runner.runner}" if runner.runner not in (None, "eager") else ""
    print(f"translated {len(result.written)} image(s) into {args.output} ({runner.backend}{how}, {runner.precision}){skipped}")
    return 0 if result.written else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from dcdgan.metrics.latency import BenchSettings, bench, format_bench

    settings = BenchSettings(args.backend, args.precision, args.device, args.size, args.batch, args.threads, args.runs, args.warmup, args.input_nc, args.runner)
    result = bench(args.model, settings, args.vs, "teacher" if args.teacher else "student")
    print(json.dumps(result, indent=2) if args.json else format_bench(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from dcdgan.config import recipe_names
    from dcdgan.nets import GENERATORS

    parser = argparse.ArgumentParser(prog="dcdgan", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("distill", help="train teacher, discriminator and student online (default: built-in quickstart)", description=(
        f"Distill a student generator. CONFIG is a YAML file or a packaged recipe ({', '.join(recipe_names())}); "
        "without one, the quickstart runs on the embedded Fashion-MNIST shoes on CPU in minutes. "
        "KEY=VALUE overrides any config key (see --help-config)."))
    p.add_argument("config", nargs="?", help="YAML file or recipe name (default: quickstart)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.batch_size=4 data.root=/data/h2z")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.ckpt, with its own config (KEY=VALUE overrides apply; a CONFIG or another --run-dir is refused)")
    p.add_argument("--run-dir", help="run directory (default: run.output_dir/run.name)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default and meaning")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("check", help="scan the dataset a run would use (every image opened) and report all problems", description=(
        "Run the dataset scan that dcdgan distill runs before training, alone: every image of the train, validation "
        "and test splits is opened and decoded; all problems are listed at once. Exit code 0 when a run could start."))
    p.add_argument("config", nargs="?", help="YAML file or recipe name (default: quickstart)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.root=/data/h2z")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("eval", help="FID/KID, PSNR/SSIM, params and MACs of a run's delivered teacher and students -> metrics.json", description=(
        "Evaluate the delivered teacher (teacher.safetensors) and the last and best-on-validation students of a run on a split. FID uses the "
        "TF-2015 Inception (pytorch-fid convention); the reference is --ref, --ref-dir, or the split's target images."))
    p.add_argument("run", help="run directory or checkpoint file (or an exported .onnx/.xml/.pt2 inside a run directory)")
    p.add_argument("--model", help="score this exported model (.onnx, OpenVINO .xml, .pt2, .pte, .tflite) on the run's split, beside the run's last student")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--ref", help="reference statistics .npz (mu, sigma[, features for KID])")
    ref.add_argument("--ref-dir", help="folder of reference images (statistics computed at the run's image size)")
    p.add_argument("--inception", help="FID Inception file (TorchScript or pytorch-fid state dict); default: auto")
    p.add_argument("--no-fid", action="store_true", help="skip FID/KID (when no Inception weights are available)")
    p.add_argument("--max-images", type=int, help="evaluate at most N images")
    p.add_argument("--batch-size", type=int, help="evaluation batch size")
    p.add_argument("--segmenter", help="TorchScript segmentation model: adds mIoU of generated images (Cityscapes protocol)")
    p.add_argument("--labels", help="folder of integer label maps named like the test images (with --segmenter)")
    p.add_argument("--num-classes", type=int, default=19, help="segmentation classes (default 19, Cityscapes train ids)")
    p.add_argument("--ignore-index", type=int, default=255, help="label value to ignore (default 255)")
    p.add_argument("--lpips-backbone", help="torchvision backbone state dict (features.N.*) for LPIPS on paired data; LPIPS is skipped without it")
    p.add_argument("--lpips-net", default="alex", choices=("alex", "vgg", "squeeze"), help="LPIPS backbone architecture (default alex)")
    p.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE", help="change a data key, e.g. data.root=/new/path")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("stats", help="FID reference statistics (mu, sigma) of an image folder -> .npz", description=(
        "Compute FID reference statistics in the pytorch-fid / GAN Compression .npz format (mu, sigma), plus the "
        "features themselves so KID can use the file."))
    p.add_argument("images", help="folder of images")
    p.add_argument("--out", required=True, type=Path, help="output .npz")
    p.add_argument("--size", type=int, help="resize images to SIZE x SIZE first (match your generator's outputs); default: as stored")
    p.add_argument("--channels", type=int, default=3, choices=(1, 3), help="load images as 1 or 3 channels (default 3)")
    p.add_argument("--inception", default="auto", help="FID Inception file; default: auto")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--no-features", action="store_true", help="store only mu and sigma (no KID against this file)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("profile", help="parameters and MACs of a generator", description="Parameters and MACs (torchprofile convention) of a registered generator.")
    p.add_argument("netG", choices=sorted(GENERATORS), help="generator architecture")
    p.add_argument("--ngf", type=int, help="width (default: the architecture's, as dcdgan bench: 16 for mobile_resnet_9blocks, else 64)")
    p.add_argument("--size", type=int, default=256, help="input height and width (default 256)")
    p.add_argument("--input-nc", type=int, default=3)
    p.add_argument("--output-nc", type=int, default=3)
    p.add_argument("--json", action="store_true", help='print {"params": ..., "macs": ...}')
    p.set_defaults(func=cmd_profile)

    from dcdgan.backends import BACKENDS, PRECISIONS, RUN_PRECISIONS
    from dcdgan.cuda_runners import RUNNERS
    from dcdgan.export import FORMATS

    runner_help = "PyTorch on CUDA: cuda-graph (replay captured graphs), compile (torch.compile reduce-overhead) or eager; default auto: cuda-graph on --device cuda, eager on CPU"
    precision_help = "fp32 (TF32 off on CUDA), tf32 (CUDA), bf16, fp16 (CUDA or OpenVINO), int8 (OpenVINO; .pte/.tflite int8 exports run at int8)"

    p = sub.add_parser("export", help="export a student (or teacher) to ONNX, OpenVINO IR or torch.export, checked against PyTorch", description=(
        "Export with dynamic batch/height/width. A parity check against PyTorch on random input and the run's images prints the "
        "max abs difference and fails over 1e-4 (fp32). Lower precisions (OpenVINO) print PSNR against fp32 on validation images; "
        "int8 is NNCF post-training quantization calibrated on the run's training images (executorch, litert: XNNPACK's pt2e "
        "quantizer, ai-edge-quantizer; one image size, refused under 30 dB PSNR against fp32)."))
    p.add_argument("model", help="run directory, checkpoint, or generator .safetensors")
    p.add_argument("--format", required=True, choices=(*FORMATS, "web"), help="web: a static folder that runs the model in the browser (onnxruntime-web)")
    p.add_argument("--out", required=True, help="output file (.onnx, .xml (+ .bin), .pt2, .pte, .tflite, .mlpackage), or folder (web)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="fp32 (all formats); fp16, bf16 (openvino); int8 (openvino, executorch, litert)")
    p.add_argument("--teacher", action="store_true", help="export the run's teacher instead of its student")
    p.add_argument("--size", type=int, help="parity-check size (and SIZE+8); litert and int8 executorch: the model's fixed input size (default: the run's image size)")
    p.add_argument("--json", action="store_true", help="print the result (parity, PSNR) as JSON")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("translate", help="translate an image or a folder tree with a model on any backend", description=(
        "Translate INPUT (an image, or a folder searched recursively) into OUTPUT, keeping file names. Any image size works "
        "(reflection padding to the net's stride multiple, then cropped back); grayscale and RGBA images are converted. "
        "Unreadable files are skipped with a warning; the exit code is 1 only when nothing was translated."))
    p.add_argument("model", help="run directory, checkpoint, .safetensors, .onnx, OpenVINO .xml, .pt2, ExecuTorch .pte or LiteRT .tflite")
    p.add_argument("input", help="image file or folder")
    p.add_argument("output", help="output folder (or file, for one input image)")
    p.add_argument("--backend", default="torch", choices=BACKENDS, help="default torch (.onnx files: onnxruntime; .xml: openvino)")
    p.add_argument("--precision", default="fp32", choices=RUN_PRECISIONS, help=precision_help)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--runner", default="auto", choices=RUNNERS, help=runner_help)
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--batch-size", type=int, default=8, help="images per call (default 8); cuda-graph and compile fill short batches up to it, so each image size is captured once")
    p.add_argument("--teacher", action="store_true", help="use a run's teacher")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("bench", help="latency of a model on a backend (median, p90); --vs times two models alternately", description=(
        "Warm up, then time repeated runs. MODEL_OR_NETG is a model (as translate reads) or an architecture name[:ngf] with "
        "random weights, e.g. resnet_9blocks or mobile_resnet_9blocks:16. The backend runs at exactly the requested precision."))
    p.add_argument("model", metavar="MODEL_OR_NETG")
    p.add_argument("--vs", metavar="OTHER", help="a second model, timed alternately in this process; adds speedup and mac_ratio")
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--precision", default="fp32", choices=RUN_PRECISIONS, help=precision_help)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--runner", default="auto", choices=RUNNERS, help=runner_help)
    p.add_argument("--size", type=int, default=256, help="input height and width (default 256)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, help="CPU threads (default: the library's own choice)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per model (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--input-nc", type=int, default=3, help="channels of architecture names (default 3)")
    p.add_argument("--teacher", action="store_true", help="use a run's teacher")
    p.add_argument("--json", action="store_true", help="print median_ms, p90_ms, ... as JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="teacher and student side by side in the browser, with latency (Gradio)", description=(
        "Serve a Gradio app comparing a run's teacher and student on uploaded pictures, the run's test images or a live "
        "sketch, with params, MACs and the latency of each call, the run's report, and the API endpoint /translate. "
        "MODELS: nothing (the newest run under runs/), a run directory, or TEACHER STUDENT (run directories or model files)."))
    p.add_argument("models", nargs="*", metavar="RUN_DIR_OR_MODEL", help="run directory, or teacher and student model files")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "openvino"), help="inference backend (default torch)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where PyTorch runs the models (default cpu)")
    p.add_argument("--runner", default="auto", choices=RUNNERS, help=runner_help)
    p.add_argument("--precision", default="fp32", choices=RUN_PRECISIONS, help=precision_help)
    p.set_defaults(func=cmd_demo)

    parser.add_argument("--debug", action="store_true", help="show the Python traceback of errors")
    for command in sub.choices.values():  # also accepted after the command; SUPPRESS keeps the top-level value
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the Python traceback of errors")
    return parser


# Errors of the machine rather than of our code: a full disk, a read-only or forbidden folder. They get one
# line like bad input; files are written atomically, so what was saved before (the last checkpoint) is intact.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input ends with one line on stderr and exit code 2, a non-finite training loss with exit code 3
    (``UserError.exit_code``; a traceback only with --debug)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        print(f"dcdgan {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        if args.debug:
            traceback.print_exc()
        where = f"{err.filename}: " if err.filename else ""
        print(f"dcdgan {args.command}: error: {where}{err.strerror or err}; files written before it (the previous checkpoint) are intact", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dcdgan {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m gptoss_magics demo`` (the tour on the tiny model),
``python -m gptoss_magics build-tiny`` (prepare the tiny model ahead of time),
``python -m gptoss_magics check PATH [--manifest FILE]`` (check a weights folder before
loading it; with a manifest, verify every byte of a copy) and
``python -m gptoss_magics manifest PATH > weights.sha256`` (the SHA-256 of every file) and
``python -m gptoss_magics dequantize SRC DST`` (a bf16 copy of an MXFP4 checkpoint, which
vLLM runs on a CPU without AMX)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


def demo(model: str) -> int:
    """Load a model, ask it at each effort, batch, stream, unload; print what happens."""
    import gptoss_magics as gm
    from gptoss_magics import display

    print(f"gptoss-magics {gm.__version__}: loading {model!r} in this process ...", flush=True)
    t0 = time.perf_counter()
    st = gm.load(model)
    print(f"loaded {st['model']} on {st['device']} ({st['vllm']}) in "
          f"{time.perf_counter() - t0:.1f} s; RSS {_mb(st['rss_bytes'])}")
    if st.get("notice"):
        print(f"NOTE: {st['notice']}")
    for effort in ("low", "medium", "high"):
        reply = gm.complete("What is 17 + 25?", effort=effort, max_tokens=256, temperature=0)
        print(f"\n== effort={effort} (reasoning shown)\n"
              f"{display.to_text(reply, show_reasoning=True)}")
    reply = gm.complete("What is the sentiment of: the staff were rude", effort="high",
                        max_tokens=256, temperature=0, reasoning_budget=6)
    print(f"\n== effort=high with reasoning_budget=6: the engine cut the reasoning and the "
          f"model answered\n{display.to_text(reply, show_reasoning=True)}")

    import pandas as pd

    good = ["great", "lovely", "wonderful", "cheerful"]
    bad = ["awful", "rude", "boring", "broken"]
    texts = [f"the {thing} was {word}" for thing in ("food", "room", "train", "show")
             for word in good + bad] + ["the city park"] * 4
    frame = pd.DataFrame({"text": texts})
    t0 = time.perf_counter()
    labels = frame.gptoss.map("What is the sentiment of: {text}", effort="low",
                              choices=["positive", "negative", "neutral"], temperature=0,
                              cache=False, progress=False)
    wall = time.perf_counter() - t0
    s = labels.attrs["gptoss"]["summary"]
    print(f"\n== df.gptoss.map: {s['rows']} rows ({s['unique_prompts']} distinct prompts) "
          f"in one engine batch, {s['completion_tokens']} tokens in {wall:.2f} s")
    print(pd.DataFrame({"text": texts, "label": labels}).iloc[[0, 4, 9, 13, 32]].to_string())
    print("\n== streaming:", end="", flush=True)
    channel = None
    for piece in gm.stream("Uppercase the word: river", max_tokens=128, temperature=0):
        if isinstance(piece, tuple):
            if piece[0] != channel:
                channel = piece[0]
                print(f"\n[{channel or 'text'}] ", end="")
            print(piece[1], end="", flush=True)
    mem = gm.unload()
    print(f"\n\n== unload: RSS before load {_mb(mem['rss_before_load'])}, loaded "
          f"{_mb(mem['rss_loaded'])}, after unload {_mb(mem['rss_after_unload'])}")
    return 0


def check(path: str) -> int:
    """Print what check_model finds in ``path``: exit 0 when it can be loaded, else 1.

    A bad folder is reported as ``problem:`` lines; even a failure of the check itself
    is one line, never a traceback.
    """
    from gptoss_magics.model_check import check_model

    try:
        result = check_model(path)
    except Exception as exc:  # a bug in the checker, not the folder: still one line
        print(f"{path}: NOT CHECKED\n  problem: the check itself failed "
              f"({type(exc).__name__}: {exc}); please report this")
        return 1
    print(repr(result))
    return 0 if result.ok else 1


def verify(path: str, manifest: str) -> int:
    """Check ``path`` (headers) and verify every file against ``manifest``: exit 0 when
    both pass, else 1, with one line per problem."""
    from gptoss_magics.errors import GptOssError
    from gptoss_magics.manifest import check_manifest

    status = check(path)
    try:
        result = check_manifest(path, manifest, progress=sys.stderr.isatty())
    except GptOssError as exc:
        print(f"{path}: NOT VERIFIED\n  problem: {exc}")
        return 1
    print(repr(result))
    return status or (0 if result.ok else 1)


def manifest(path: str) -> int:
    """Print the manifest of ``path`` (``sha256sum`` format) on standard output."""
    from gptoss_magics.errors import GptOssError
    from gptoss_magics.manifest import write_manifest

    try:
        # leave out the file standard output is redirected into, if it is in the folder
        text = write_manifest(path, progress=sys.stderr.isatty(),
                              exclude=(Path(f"/dev/fd/{sys.stdout.fileno()}"),))
    except GptOssError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def dequantize(src: str, dst: str, manifest: str | None) -> int:
    """Write a bf16 copy of the MXFP4 checkpoint ``src`` into ``dst``: the plan (disk
    space needed and free) first, then a progress bar, then what was written; exit 0, or
    1 with one ``error:`` line."""
    from gptoss_magics.dequantize import dequantize_mxfp4, plan_dequantize
    from gptoss_magics.errors import GptOssError

    try:
        print(repr(plan_dequantize(src, dst)), flush=True)
        result = dequantize_mxfp4(src, dst, manifest=manifest, progress=sys.stderr.isatty())
    except GptOssError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(repr(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gptoss_magics")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="a tour of the core API on a model (default: tiny)")
    d.add_argument("model", nargs="?", default="tiny")
    b = sub.add_parser("build-tiny", help="build the embedded tiny model into the cache")
    b.add_argument("--name", default="tiny")
    c = sub.add_parser("check", help="check a weights folder (offline, headers only): "
                                     "exit 0 when it can be loaded")
    c.add_argument("path")
    c.add_argument("--manifest", metavar="FILE",
                   help="also verify every file against this manifest (SHA-256, all bytes)")
    m = sub.add_parser("manifest", help="print the SHA-256 of every file in a folder "
                                        "(sha256sum format), e.g. > weights.sha256")
    m.add_argument("path")
    q = sub.add_parser("dequantize", help="write a bf16 copy of an MXFP4 checkpoint (as "
                                          "published), which vLLM runs on a CPU without AMX")
    q.add_argument("src", help="the MXFP4 checkpoint: a folder, or 'tiny-mxfp4'")
    q.add_argument("dst", help="a new or empty folder for the bf16 copy")
    q.add_argument("--manifest", metavar="FILE",
                   help="verify every file of SRC against this manifest first")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.model)
    if args.command == "check":
        return verify(args.path, args.manifest) if args.manifest else check(args.path)
    if args.command == "manifest":
        return manifest(args.path)
    if args.command == "dequantize":
        return dequantize(args.src, args.dst, args.manifest)
    from gptoss_magics.tiny import build_tiny

    print(build_tiny(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())

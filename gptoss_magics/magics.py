"""IPython magics: ``%%gptoss``, ``%gptoss_load``, ``%gptoss_status``, ``%gptoss_unload``.

Thin over :mod:`gptoss_magics.session`: parse arguments, expand the prompt
template, call, display. Argument mistakes and library errors become one-line
``UsageError``s.
"""

from __future__ import annotations

import ast
import html
import re
import sys
import time
from argparse import SUPPRESS
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split

from . import display, session, template
from .errors import GptOssError
from .harmony import Turn
from .reply import Reply, strip_fences
from .settings import EFFORTS, settings


@contextmanager
def _usage_errors() -> Iterator[None]:
    """Turn our own errors (and bad values) into one-line UsageErrors."""
    try:
        yield
    except GptOssError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@dataclass
class Chat:
    """A multi-turn conversation kept by ``%%gptoss --chat NAME``.

    Each finished turn keeps the user's prompt and the final answer; the reasoning
    of earlier turns is not sent again, as the harmony format asks.
    """

    turns: list[Turn] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list, repr=False)

    def add(self, prompt: str, reply: Reply) -> None:
        """Record a finished turn."""
        self.turns.append(Turn(prompt, reply.final))
        self.replies.append(reply)

    def clear(self) -> None:
        """Forget every turn."""
        self.turns.clear()
        self.replies.clear()

    def __len__(self) -> int:
        return len(self.turns)

    def __repr__(self) -> str:
        lines = [f"Chat with {len(self.turns)} turn(s)"]
        for i, turn in enumerate(self.turns, 1):
            lines.append(f"  {i}. user: {turn.user[:60]!r} -> {turn.final[:60]!r}")
        return "\n".join(lines)


class StatusView(dict[str, Any]):
    """The engine status; shows as a table, and is a plain dict underneath."""

    def _rows(self) -> list[tuple[str, str]]:
        def mb(v: Any) -> str:
            return "-" if v is None else f"{v / 2**20:,.0f} MiB"

        rows = [("state", str(self.get("state"))), ("model", str(self.get("model") or "-"))]
        if self.get("model"):
            rows += [
                ("device", f"{self.get('device')} ({self.get('dtype')})"),
                ("vllm", str(self.get("vllm"))),
                ("weights", str(self.get("weights_fingerprint"))[:23]),
                ("max_model_len", str(self.get("max_model_len"))),
                ("engine", "child process" if self.get("multiprocess") else "in this process"),
                ("gpu memory used", mb(self.get("gpu_used_bytes"))),
                ("tokens generated", f"{self.get('tokens_generated', 0):,}"),
                ("last run", f"{self.get('last_tokens_per_s') or '-'} tok/s"),
            ]
        for job in self.get("background") or []:
            rows.append(("background", f"{job.get('kind', 'job')} {job.get('rows_done', 0):,}"
                                       f"/{job.get('rows', 0):,} rows"))
        rows.append(("process memory (RSS)", mb(self.get("rss_bytes"))))
        d = self.get("defaults", {})
        rows.append(("defaults", ", ".join(f"{k}={v}" for k, v in d.items())))
        if self.get("notice"):
            rows.append(("note", str(self["notice"])))
        return rows

    def __repr__(self) -> str:
        rows = self._rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in self._rows()
        )
        return f"<table class='gptoss-status'>{body}</table>"


_ENGINE_FLAG = re.compile(r"^--([A-Za-z][\w-]*)(?:=(.*))?$")


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        return text


def _engine_extras(extras: list[str]) -> dict[str, Any]:
    """``--some-arg value`` / ``--some-arg=value`` / ``--flag`` -> {'some_arg': value}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(extras):
        match = _ENGINE_FLAG.match(extras[i])
        if not match:
            raise UsageError(f"unexpected argument {extras[i]!r}: engine options look like "
                             "--name value or --name=value")
        name, value = match.group(1).replace("-", "_"), match.group(2)
        if value is None and i + 1 < len(extras) and not extras[i + 1].startswith("--"):
            value = extras[i + 1]
            i += 1
        out[name] = True if value is None else _literal(value)
        i += 1
    return out


def _budget(text: str) -> int | None:
    """argparse type of --reasoning-budget: a token count, or 'none' for no limit."""
    if text.lower() in ("none", "off"):
        return None
    value = int(text)  # argparse turns the ValueError into "invalid _budget value"
    if value < 0:
        raise ValueError(text)
    return value


_budget.__name__ = "token count"  # argparse names the type in its error message


def _split(line: str) -> list[str]:
    """Split a magic's line like a POSIX shell: quotes group words and are removed."""
    try:
        return list(arg_split(line, posix=True))
    except ValueError as exc:  # unbalanced quotes
        raise UsageError(f"cannot parse the options: {exc}") from None


@magics_class
class GptOssMagics(Magics):
    """The gpt-oss magics."""

    # ------------------------------------------------------------------ engine
    @magic_arguments()
    @argument("model", nargs="?", default=None,
              help="Local weights folder, a Hugging Face id already in the local cache, or "
                   "'tiny' (embedded CPU test model). Default: GptOssSettings.model.")
    @argument("--dtype", help="Weights dtype, e.g. auto, bfloat16, float16, float32.")
    @argument("--max-model-len", type=int, help="Context length (prompt + reply) in tokens.")
    @argument("--tensor-parallel-size", type=int, help="Number of GPUs to split the model over.")
    @argument("--gpu-memory-utilization", type=float,
              help="Share of GPU memory vLLM may use (on CPU: of the NUMA node's memory).")
    @argument("--multiprocess", action="store_true",
              help="Run vLLM's engine core in a child process instead of the kernel.")
    @line_magic
    def gptoss_load(self, line: str) -> StatusView:
        """Load a gpt-oss model into an in-process vLLM engine.

        Other vLLM engine arguments can follow as --name value (for example
        --enforce-eager, --kv-cache-memory-bytes 1000000000). Nothing is downloaded:
        the weights must be on this machine.
        """
        args, extras = self.gptoss_load.parser.parse_known_args(_split(line))
        engine_args = _engine_extras(extras)
        for name in ("dtype", "max_model_len", "tensor_parallel_size",
                     "gpu_memory_utilization"):
            value = getattr(args, name)
            if value is not None:
                engine_args[name] = value
        if args.multiprocess:
            engine_args["multiprocess"] = True
        model = args.model or settings().model
        print(f"Loading {model} ...", flush=True)
        with _usage_errors():
            st = session.load(model, **engine_args)
        return StatusView(st)

    @line_magic
    def gptoss_status(self, line: str) -> StatusView:
        """Show the loaded model, its device, the memory in use and the current defaults."""
        if line.strip():
            raise UsageError("%gptoss_status takes no arguments")
        return StatusView(session.status())

    @line_magic
    def gptoss_unload(self, line: str) -> None:
        """Shut the engine down and give its memory back, without restarting the kernel."""
        if line.strip():
            raise UsageError("%gptoss_unload takes no arguments")
        with _usage_errors():
            mem = session.unload()
        freed = mem["rss_loaded"] - mem["rss_after_unload"]
        msg = f"Unloaded {mem['model']}: process memory {freed / 2**20:,.0f} MiB smaller"
        if mem.get("gpu_loaded") is not None and mem.get("gpu_after_unload") is not None:
            gpu = (mem["gpu_loaded"] - mem["gpu_after_unload"]) / 2**30
            msg += f", GPU memory {gpu:,.1f} GiB freed"
        print(msg + ".")

    @magic_arguments()
    @argument("prompt", nargs="*",
              help="Optional prompt: re-run it whenever a slider moves.")
    @line_magic
    def gptoss_panel(self, line: str) -> Any:
        """Show sliders for reasoning effort, temperature and max tokens.

        They are linked to the settings, so the next %%gptoss cell and df.gptoss.map use
        what they show. With a prompt, each slider move re-runs it and shows the answer.
        """
        args = self.gptoss_panel.parser.parse_args(_split(line))
        from .widgets import effort_panel

        prompt = " ".join(args.prompt) or None
        if prompt is not None:
            assert self.shell is not None
            with _usage_errors():
                prompt = template.render_from(prompt, self.shell.user_ns)
        return effort_panel(prompt)

    @magic_arguments()
    @argument("frame", help="Name of the DataFrame (or Series) variable.")
    @argument("template", help="The prompt, quoted, with {column} fields.")
    @argument("--out", "-o", metavar="NAME", required=True,
              help="Column to write the answers into (with --schema: prefix of the columns).")
    @argument("--effort", "-e", choices=EFFORTS, help="Reasoning effort.")
    @argument("--max-tokens", "-n", type=int, help="Most tokens per row, reasoning included.")
    @argument("--temperature", "-t", type=float, help="Sampling temperature.")
    @argument("--seed", "-s", type=int, help="Sampling seed.")
    @argument("--instructions", "-i", help="Developer instructions for every row.")
    @argument("--reasoning-budget", "-b", type=_budget, metavar="N", default=SUPPRESS,
              help="Most reasoning tokens per row, then the row's answer is forced "
                   "('none': no limit).")
    @argument("--choices", help="Comma-separated labels; the answer is one of them.")
    @argument("--regex", help="Regular expression the answer must match.")
    @argument("--schema", metavar="NAME",
              help="Variable holding a pydantic model or JSON schema: one column per field.")
    @argument("--examples", metavar="NAME",
              help="Variable holding worked examples: a DataFrame with the template's columns "
                   "and an 'answer' column, or a list of (input, answer) pairs.")
    @argument("--reasoning", action="store_true", help="Also add a NAME_reasoning column.")
    @argument("--usage", action="store_true",
              help="Also add NAME_prompt_tokens, NAME_reasoning_tokens and "
                   "NAME_completion_tokens columns.")
    @argument("--confidence", action="store_true",
              help="Also add a NAME_confidence column: the model's probability of each answer.")
    @argument("--no-cache", action="store_true", help="Neither read nor write the cache.")
    @argument("--background", action="store_true",
              help="Run in the background and return the MapJob (the notebook stays usable; "
                   "df['NAME'] = job.result() when it is done).")
    @argument("--dry-run", action="store_true",
              help="Generate nothing: show the plan (rows, cached rows, prompt tokens, the "
                   "first prompt as the model receives it).")
    @line_magic
    def gptoss_map(self, line: str) -> Any:
        """Run gpt-oss on every row of a DataFrame and store the answers as a column.

        Example::

            %gptoss_map df "Summarise: {text}" --out summary --effort low
            %gptoss_map df "Summarise: {text}" --out summary --effort low --dry-run
            job = %gptoss_map df "Summarise: {text}" --out summary --background
        """
        args = self.gptoss_map.parser.parse_args(_split(line))
        assert self.shell is not None
        ns = self.shell.user_ns
        import pandas as pd

        target = ns.get(args.frame)
        if not isinstance(target, (pd.DataFrame, pd.Series)):
            raise UsageError(f"{args.frame!r} is not a DataFrame or Series in this notebook")
        schema = None
        if args.schema:
            if args.schema not in ns:
                raise UsageError(f"--schema {args.schema}: no such variable")
            schema = ns[args.schema]
        choices = [c.strip() for c in args.choices.split(",")] if args.choices else None
        examples = None
        if args.examples:
            if args.examples not in ns:
                raise UsageError(f"--examples {args.examples}: no such variable")
            examples = ns[args.examples]
        kwargs = dict(
            examples=examples,
            effort=args.effort, max_tokens=args.max_tokens, temperature=args.temperature,
            seed=args.seed if args.seed is not None else "default",
            instructions=args.instructions, choices=choices, regex=args.regex,
            reasoning_budget=getattr(args, "reasoning_budget", "default"),
            schema=schema, reasoning=args.reasoning, confidence=args.confidence,
            usage=args.usage,
            cache=not args.no_cache)
        with _usage_errors():
            if args.dry_run:
                return target.gptoss.plan(args.template, **kwargs)
            if args.background:  # the column is the caller's to assign, on their thread
                return target.gptoss.submit(args.template, **kwargs)
            result = target.gptoss.map(args.template, **kwargs)
        if isinstance(target, pd.Series):
            ns[args.out] = result
            return
        if isinstance(result, pd.Series):
            target[args.out] = result
        else:
            for column in result.columns:
                name = args.out if column == "answer" else f"{args.out}_{column}"
                target[name] = result[column]
        s = result.attrs["gptoss"]["summary"]
        cut = f", {s['reasoning_cut']} reasoning cut" if s.get("reasoning_cut") else ""
        print(f"{args.out}: {s['rows']} rows, {s['generated']} generated, {s['cached']} from "
              f"the cache, {s['missing']} missing, {s['truncated']} truncated{cut}, "
              f"{s['errors']} failed ({s['seconds']:.1f} s)")

    # ------------------------------------------------------------------ prompting
    @magic_arguments()
    @argument("--effort", "-e", choices=EFFORTS,
              help="Reasoning effort (default: GptOssSettings.effort).")
    @argument("--max-tokens", "-n", type=int,
              help="Most tokens to generate, reasoning included.")
    @argument("--temperature", "-t", type=float, help="Sampling temperature (0 = greedy).")
    @argument("--seed", "-s", type=int, help="Sampling seed, for reproducible answers.")
    @argument("--instructions", "-i", help="Developer instructions for this prompt.")
    @argument("--reasoning-budget", "-b", type=_budget, metavar="N", default=SUPPRESS,
              help="Most reasoning tokens; when they run out the model must answer at once "
                   "('none': no limit; default: GptOssSettings.reasoning_budget).")
    @argument("--show-reasoning", dest="show_reasoning", action="store_const", const=True,
              default=None, help="Show the reasoning expanded.")
    @argument("--hide-reasoning", dest="show_reasoning", action="store_const", const=False,
              help="Show the reasoning collapsed.")
    @argument("--confidence", action="store_true",
              help="Report the model's probability of its answer (reply.confidence).")
    @argument("--choices", help="Comma-separated labels: the answer is one of them.")
    @argument("--regex", help="Regular expression the answer must match.")
    @argument("--schema", metavar="NAME",
              help="Variable holding a pydantic model or JSON schema: the answer is such "
                   "JSON, and reply.value the object.")
    @argument("-o", "--output", metavar="NAME", help="Also store the Reply in variable NAME.")
    @argument("--chat", metavar="NAME",
              help="Keep a multi-turn conversation in variable NAME (created if missing).")
    @argument("--format", "-f", choices=("markdown", "text", "code", "json"),
              default="markdown",
              help="markdown (default), text, code (answer goes into a new cell) or json "
                   "(the answer is checked to be valid JSON).")
    @argument("--no-template", action="store_true",
              help="Send the cell as it is, without expanding {variables}.")
    @cell_magic
    def gptoss(self, line: str, cell: str) -> None:
        """Prompt gpt-oss with the cell; the answer streams into the output.

        {name}, {name.attr} and {name[key]} in the cell are replaced by values from
        the notebook (write {{ and }} for literal braces). The Reply goes to `_` and,
        with -o NAME, to NAME. Interrupting the kernel stops generation at once and
        keeps what was generated.

        Example::

            %%gptoss --effort high -o reply
            Summarise the risks in {filing_text} in three bullets.
        """
        args = self.gptoss.parser.parse_args(_split(line))
        shell = self.shell
        assert shell is not None
        ns = shell.user_ns
        with _usage_errors():
            prompt = cell.strip() if args.no_template else \
                template.render_from(cell, ns).strip()
            if not prompt:
                raise UsageError("The cell is empty: write a prompt below %%gptoss.")
            chat = None
            if args.chat:
                if not args.chat.isidentifier():
                    raise UsageError(f"--chat needs a variable name, not {args.chat!r}")
                chat = ns.get(args.chat)
                if chat is None:
                    chat = ns[args.chat] = Chat()
                elif not isinstance(chat, Chat):
                    raise UsageError(f"{args.chat} holds a {type(chat).__name__}, not a chat: "
                                     "choose another --chat name")
            if args.output is not None and not args.output.isidentifier():
                raise UsageError(f"-o needs a variable name, not {args.output!r}")
            schema = None
            if args.schema:
                if args.schema not in ns:
                    raise UsageError(f"--schema {args.schema}: no such variable")
                schema = ns[args.schema]
            handle = session.StreamHandle(
                prompt, effort=args.effort, max_tokens=args.max_tokens,
                temperature=args.temperature,
                seed=args.seed if args.seed is not None else "default",
                instructions=args.instructions,
                history=chat.turns if chat is not None else (),
                reasoning_budget=getattr(args, "reasoning_budget", "default"),
                confidence=args.confidence,
                choices=[c.strip() for c in args.choices.split(",")] if args.choices else None,
                regex=args.regex, schema=schema,
            )
        interrupted = False
        try:
            _stream_into_cell(handle, args.show_reasoning, args.format)
        except KeyboardInterrupt:
            interrupted = True
        reply = handle.reply()
        if chat is not None and reply.final and not interrupted:
            chat.add(prompt, reply)
        if args.output:
            ns[args.output] = reply
        shell.displayhook.update_user_ns(reply)
        if interrupted:
            raise KeyboardInterrupt(
                f"generation interrupted after {reply.completion_tokens} tokens; the partial "
                "reply is kept in _" + (f" and {args.output}" if args.output else "")
            )
        if args.format == "code" and reply.final:
            shell.set_next_input(strip_fences(reply.final), replace=False)
        elif args.format == "json" and reply.final:
            try:
                reply.json()
            except ValueError as exc:
                print(f"warning: {exc}; it is kept as text (reply.json() parses it)",
                      file=sys.stderr)


def _in_terminal() -> bool:
    """True in a plain IPython terminal, where text streams to stdout; everywhere else
    (kernels, embedded shells) the reply is a display updated in place."""
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "TerminalInteractiveShell"


class _Live:
    """A display that is updated in place while a reply streams."""

    def __init__(self, show_reasoning: bool | None, fmt: str) -> None:
        from IPython.display import display

        self.show_reasoning = show_reasoning
        self.fmt = fmt
        self.handle = display({"text/plain": ""}, raw=True, display_id=True)
        self.last = 0.0

    def update(self, reply: Reply, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        if final:
            data, meta = display.reply_bundle(reply, show_reasoning=self.show_reasoning)
            if self.fmt in ("text", "code", "json"):
                data.pop("text/markdown", None)
                data["text/html"] = display.to_html(reply, self.show_reasoning,
                                                    markdown=False)
        else:
            data = {"text/plain": display.to_text(reply, self.show_reasoning),
                    "text/html": display.to_html(reply, self.show_reasoning, streaming=True)}
            meta = {}
        if self.handle is not None:
            self.handle.update(data, metadata=meta, raw=True)


def _partial(handle: session.StreamHandle, analysis: str, final: str) -> Reply:
    sess = handle.session
    return Reply(final=final, analysis=analysis, finish_reason="running", truncated=False,
                 prompt_tokens=len(handle.prompt_ids), completion_tokens=len(handle.token_ids),
                 latency_s=time.perf_counter() - handle.t0, effort=handle.options.effort,
                 model=sess.label, analysis_tokens=handle.decoder.analysis_tokens,
                 notice=sess.notice)


def _stream_into_cell(handle: session.StreamHandle, show_reasoning: bool | None,
                      fmt: str) -> None:
    """Stream the reply: in a notebook as a live display, in a terminal as text."""
    if _in_terminal():
        _stream_to_terminal(handle, show_reasoning)
        return
    live = _Live(show_reasoning, fmt)
    analysis: list[str] = []
    final: list[str] = []
    try:
        for channel, text in handle.deltas():
            (analysis if channel in ("analysis", "commentary") else final).append(text)
            live.update(_partial(handle, "".join(analysis), "".join(final)))
    finally:
        live.update(handle.reply(), final=True)


def _stream_to_terminal(handle: session.StreamHandle, show_reasoning: bool | None) -> None:
    show = settings().show_reasoning if show_reasoning is None else show_reasoning
    if handle.session.notice:
        print(f"[{handle.session.notice}]")
    channel_now: str | None = "start"
    try:
        for channel, text in handle.deltas():
            if channel in ("analysis", "commentary") and not show:
                continue
            if channel != channel_now:
                label = {"analysis": "--- reasoning ---", "final": "--- answer ---"}.get(
                    channel or "", "")
                if label and show:
                    print(("\n" if channel_now != "start" else "") + label)
                channel_now = channel
            print(text, end="", flush=True)
    finally:
        reply = handle.reply()
        print()
        if reply.warning:
            print(f"[warning: {reply.warning}]")
        print(f"-- {display.footer(reply)}")


def register(ipython: Any) -> None:
    """Register the magics on ``ipython`` and hook the settings into its config."""
    s = settings()
    if s not in getattr(ipython, "configurables", []):
        s.update_config(ipython.config)
        ipython.configurables.append(s)
    ipython.register_magics(GptOssMagics)
    from .labcomm import attach

    attach(ipython)


__all__ = ["Chat", "GptOssMagics", "StatusView", "register"]

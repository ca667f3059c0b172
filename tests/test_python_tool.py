"""The sandboxed python tool: state, output, limits, isolation, files, cleanup, approval.

Every attack the issue names (socket, file outside, fork bomb, memory, endless loop) is
run for real in the sandbox and must be stopped with a clear text for the model. Needs
bubblewrap (``make setup`` installs it).
"""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import psutil
import pytest

from gptoss_magics.errors import GptOssWarning, InvalidOptionError, MissingDependencyError
from gptoss_magics.tools import _sandbox
from gptoss_magics.tools.approve import ApprovalPanel, WidgetApprover, ask_with_input
from gptoss_magics.tools.base import Tool, ToolSession
from gptoss_magics.tools.python import (
    LOST_STATE_TEXT,
    NO_OUTPUT_TEXT,
    REFUSED_TEXT,
    PythonSession,
    PythonTool,
)

if TYPE_CHECKING:
    from gptoss_magics.engine import ScriptedEngine

SECRET = "kernel-secret-7f3a"  # a kernel variable the sandbox must never see


@pytest.fixture
def session() -> Iterator[PythonSession]:
    opened = PythonTool(memory_mb=768).open()
    yield opened
    opened.close()


def run(session: PythonSession, code: str, timeout_s: float = 20.0) -> str:
    return session.call(code, timeout_s).text


def test_the_tool_speaks_the_protocol() -> None:
    tool = PythonTool()
    assert isinstance(tool, Tool) and tool.recipient == "python"
    assert tool.declaration() is None
    opened = tool.open()
    assert isinstance(opened, ToolSession)
    opened.close()
    assert tool.isolation == "bubblewrap"


def test_state_persists_across_calls(session: PythonSession) -> None:
    assert run(session, "x = 20\ndef double(v):\n    return 2 * v") == NO_OUTPUT_TEXT
    assert run(session, "print(double(x) + 2)") == "42\n"  # as printed
    assert run(session, "x += 1\nx") == "21"


def test_output_last_expression_and_traceback(session: PythonSession) -> None:
    out = session.call("print('hello')\nimport sys\nprint('warn', file=sys.stderr)\n"
                       "{'a': 1}", 20)
    assert out.text == "hello\nwarn\n{'a': 1}" and out.error is None
    assert run(session, "None") == NO_OUTPUT_TEXT
    failed = session.call("y = 1\nz = y / 0", 20)
    assert "Traceback (most recent call last)" in failed.text
    assert 'File "<python-3>", line 2' in failed.text and "z = y / 0" in failed.text
    assert failed.error == "ZeroDivisionError: division by zero"
    assert "_sandbox_child" not in failed.text and "<string>" not in failed.text
    assert run(session, "print(y)") == "1\n"  # lines before the error ran
    assert "SyntaxError" in run(session, "def broken(:")
    assert run(session, "```python\nprint(6 * 7)\n```") == "42\n"


def test_a_socket_reaches_nothing(session: PythonSession) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        local = session.call(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), "
                             "timeout=2)", 20)
        with pytest.raises(TimeoutError):
            server.accept()  # the kernel's loopback never saw the sandbox
    finally:
        server.close()
    assert "ConnectionRefusedError" in local.text
    assert "no network access" in local.text
    outside = run(session, "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)")
    assert "Network is unreachable" in outside and "no network access" in outside
    dns = run(session, "import socket\nsocket.getaddrinfo('example.com', 80)")
    assert "gaierror" in dns and "no network access" in dns


def test_files_outside_the_working_folder_are_invisible(session: PythonSession,
                                                         tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    for path in (secret, Path.home() / ".bashrc", Path("/etc/passwd"),
                 Path(__file__).resolve()):
        text = run(session, f"open({str(path)!r}).read()")
        assert "FileNotFoundError" in text, text
        assert "sees only its working folder (/mnt/data)" in text
        assert SECRET not in text
    allowed = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "mnt", "proc", "sbin",
               "tmp", "usr"} | {Path(p).parts[1] for p in _sandbox._python_roots()}
    assert set(eval(run(session, "import os\nos.listdir('/')"))) <= allowed
    assert set(eval(run(session, "import os\nos.listdir('/etc')"))) <= {
        "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives"}
    repo = Path(__file__).resolve().parent.parent
    seen = run(session, f"import os\nos.listdir({str(repo)!r})")
    assert seen == "['.venv']" or "FileNotFoundError" in seen  # only the environment
    readonly = run(session, "import sys\nopen(sys.prefix + '/planted.py', 'w')")
    assert "Read-only file system" in readonly or "Permission denied" in readonly


def test_a_fork_bomb_is_stopped(session: PythonSession) -> None:
    run(session, "kept = 'still here'")
    out = session.call("import os\nwhile True:\n    os.fork()", 30)
    assert "BlockingIOError" in out.text
    assert "the sandbox allows 64 processes" in out.text
    assert run(session, "import os\nlen([p for p in os.listdir('/proc') if p.isdigit()])") == "2"
    assert run(session, "kept") == "'still here'"
    assert session.pid is not None
    assert len(psutil.Process(session.pid).children(recursive=True)) <= 2


def test_memory_past_the_limit_is_stopped(session: PythonSession) -> None:
    out = session.call("big = bytearray(2 * 1024 ** 3)", 20)
    assert out.error == "MemoryError"
    assert "memory limit is 768 MB" in out.text
    assert run(session, "small = bytearray(10 ** 6)\nlen(small)") == "1000000"


def test_an_endless_loop_is_stopped_and_the_session_lives_on(session: PythonSession) -> None:
    run(session, "before = 1")
    out = session.call("n = 0\nwhile True:\n    n += 1", 1.0)
    assert out.error is not None and out.error.startswith("TimeoutError")
    assert "ran longer than 1 s" in out.text and 'File "<python-2>", line' in out.text
    assert int(run(session, "n")) > 0  # stopped where it was: its variables are kept
    slept = session.call("import time\ntime.sleep(60)", 1.0)
    assert "ran longer than 1 s" in slept.text
    assert run(session, "before") == "1"


def test_a_loop_that_swallows_the_interrupt_is_killed(session: PythonSession) -> None:
    run(session, "before = 1")
    pid = session.pid
    out = session.call("while True:\n    try:\n        while True:\n            pass\n"
                       "    except BaseException:\n        pass", 0.5)
    assert "did not stop when interrupted" in out.text and LOST_STATE_TEXT in out.text
    assert pid is not None and not psutil.pid_exists(pid)
    assert "NameError" in run(session, "before")  # a fresh interpreter
    assert run(session, "1 + 1") == "2"


def test_cpu_time_is_limited() -> None:
    opened = PythonTool(cpu_s=1).open()
    try:
        out = opened.call("while True:\n    pass", 30)
        assert "more than 1 s of CPU time" in out.text
        assert opened.call("'alive'", 30).text == "'alive'"
    finally:
        opened.close()


def test_a_dying_interpreter_is_replaced(session: PythonSession) -> None:
    run(session, "x = 1")
    out = session.call("import os\nprint('bye')\nos._exit(3)", 20)
    assert "bye" in out.text and "exited (status 3)" in out.text
    assert LOST_STATE_TEXT in out.text
    assert "NameError" in run(session, "x")


def test_output_is_truncated() -> None:
    opened = PythonTool(max_output_chars=1000).open()
    try:
        out = opened.call("for i in range(200_000):\n    print(i)", 30)
        assert out.truncated and len(out.text) < 1300
        assert out.text.startswith("0\n1\n2\n") and out.text.endswith("199999")
        assert "cut ...]" in out.text
        long = opened.call("'x' * 100_000", 30)
        assert long.truncated and len(long.text) < 1300
    finally:
        opened.close()


def test_files_and_dataframes_are_passed_in(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("from the user")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "inner.txt").write_text("inside")
    prices = pd.DataFrame({"day": [1, 2, 3], "close": [10.0, 11.5, 12.25]})
    tool = PythonTool(files={"notes.txt": source, "prices": prices, "raw.bin": b"\x00\x01",
                             "sub/folder": tmp_path / "folder"})
    # a frame named without a suffix is parquet where pyarrow is installed (the ray extra
    # brings it), else CSV
    kind = "parquet" if importlib.util.find_spec("pyarrow") is not None else "csv"
    assert tool.file_names == ["notes.txt", f"prices.{kind}", "raw.bin", "sub/folder"]
    opened = tool.open()
    try:
        assert run(opened, "open('notes.txt').read()") == "'from the user'"
        assert run(opened, f"import pandas as pd\nfloat(pd.read_{kind}('prices.{kind}')"
                           ".close.sum())") == "33.75"
        assert run(opened, "open('raw.bin', 'rb').read()") == "b'\\x00\\x01'"
        assert run(opened, "open('sub/folder/inner.txt').read()") == "'inside'"
        run(opened, "open('notes.txt', 'w').write('changed')")
    finally:
        opened.close()
    assert source.read_text() == "from the user"  # the sandbox had a copy


def test_file_contents_change_the_identity(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    first = PythonTool(files={"a.csv": frame}).identity()
    assert first == PythonTool(files={"a.csv": frame.copy()}).identity()
    assert first != PythonTool(files={"a.csv": frame.assign(a=[1, 3])}).identity()
    assert first["name"] == "python" and first["network"] is False


@pytest.mark.parametrize("files", [{"../up.csv": b""}, {"/abs.csv": b""}, {"x": 3},
                                   {"missing.csv": "/no/such/file.csv"}])
def test_bad_files_are_refused(files: dict) -> None:
    with pytest.raises(InvalidOptionError, match="PythonTool"):
        PythonTool(files=files)


def test_close_stops_the_process_and_deletes_the_folder() -> None:
    opened = PythonTool().open()
    run(opened, "open('made.txt', 'w').write('x')\nimport subprocess\n"
                "p = subprocess.Popen(['sleep', '60'])")
    pid, folder = opened.pid, opened.folder
    assert pid is not None and folder is not None and (folder / "made.txt").exists()
    opened.close()
    opened.close()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not folder.parent.exists()
    assert opened.call("1", 5).error == "closed"


def test_no_kernel_variable_or_environment_is_visible(session: PythonSession,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTOSS_TEST_SECRET", SECRET)
    globals()["kernel_only"] = SECRET
    assert "NameError" in run(session, "kernel_only")
    assert run(session, "import os\nos.environ.get('GPTOSS_TEST_SECRET')") == NO_OUTPUT_TEXT
    assert SECRET not in run(session, "import os\ndict(os.environ)")
    assert str(os.getpid()) not in run(session, "import os\n[p for p in os.listdir('/proc') "
                                               "if p.isdigit()]").replace("'1'", "")


def test_approve_runs_or_refuses(tmp_path: Path) -> None:
    asked: list[str] = []
    answers = iter([False, True])

    def approver(code: str) -> bool:
        asked.append(code)
        return next(answers)

    opened = PythonTool(approve=approver).open()
    try:
        refused = opened.call("open('ran.txt', 'w').write('x')", 20)
        assert refused.text == REFUSED_TEXT and refused.error == "refused by the user"
        assert opened.pid is None  # nothing was started for refused code
        assert run(opened, "import os\nos.path.exists('ran.txt')") == "False"
        assert asked == ["open('ran.txt', 'w').write('x')", "import os\nos.path.exists('ran.txt')"]
    finally:
        opened.close()


def test_with_approver_copies_the_tool() -> None:
    tool = PythonTool(files={"a.txt": b"a"})
    asking = tool.with_approver(lambda code: False)
    assert tool.approve is None and asking.files == tool.files
    assert asking.open().call("1", 5).text == REFUSED_TEXT
    with pytest.raises(InvalidOptionError, match="with_approver"):
        tool.with_approver("yes")  # type: ignore[arg-type]


def test_an_approver_that_fails_refuses() -> None:
    def broken(code: str) -> bool:
        raise RuntimeError("no display")

    out = PythonTool(approve=broken).open().call("1", 5)
    assert out.error == "approval failed: no display" and "was not run" in out.text


def test_the_approval_panel_records_the_first_click() -> None:
    panel = ApprovalPanel("print('<b>')")
    assert "print(&#x27;&lt;b&gt;&#x27;)" in panel.widget.children[1].value
    panel.run_button.click()
    assert panel.decision is True and panel.wait(0) is True
    assert all(b.disabled for b in panel.buttons) and "Approved" in panel.status.value
    panel.refuse_button.click()
    assert panel.decision is True
    refused = ApprovalPanel("1")
    refused.refuse_button.click()
    assert refused.wait() is False and refused.status.value == "Refused."


def test_the_widget_approver_waits_for_a_click() -> None:
    shown: queue.Queue = queue.Queue()
    approver = WidgetApprover(display=shown.put)
    clicker = threading.Thread(target=lambda: (shown.get(timeout=10), time.sleep(0.2),
                                               approver.last_panel.run_button.click()))
    clicker.start()
    assert approver("print(1)") is True
    clicker.join()
    assert WidgetApprover(timeout_s=0.2, display=lambda w: None)("1") is False


def test_without_a_kernel_it_asks_on_the_console(capsys: pytest.CaptureFixture) -> None:
    assert ask_with_input("print(1)", ask=lambda prompt: "y") is True
    assert "print(1)" in capsys.readouterr().out
    assert ask_with_input("print(1)", ask=lambda prompt: "") is False


def test_without_bubblewrap_the_tool_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sandbox, "bwrap_path", lambda: None)
    with pytest.raises(MissingDependencyError, match="install bubblewrap"):
        PythonTool()
    with pytest.warns(GptOssWarning, match="can read your files"):
        tool = PythonTool(allow_host_files=True)
    assert tool.isolation.startswith("none")
    opened = tool.open()
    try:
        assert run(opened, "x = 2\nx * 21") == "42"
        assert "Network is unreachable" in run(
            opened, "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)")
    finally:
        opened.close()


def test_a_click_reaches_a_cell_that_waits_in_a_real_kernel() -> None:
    """The cell blocks in the approver; the Run click (a comm message, as JupyterLab sends
    it) must still be handled, or the cell would wait for ever."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        msg_id = client.execute("from gptoss_magics.tools.approve import WidgetApprover\n"
                                "print('DECISION', WidgetApprover(timeout_s=60)('print(1)'))")
        printed, run_button, deadline = "", "", time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                msg = client.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            content = msg["content"]
            state = content.get("data", {}).get("state", {}) if isinstance(
                content.get("data"), dict) else {}
            if msg["msg_type"] == "comm_open" and state.get("description") == "Run":
                run_button = content["comm_id"]
            elif msg["msg_type"] == "display_data" and run_button:  # the panel is shown
                client.shell_channel.send(client.session.msg("comm_msg", {
                    "comm_id": run_button,
                    "data": {"method": "custom", "content": {"event": "click"}}}))
            elif msg["msg_type"] in ("stream", "error"):
                printed += content.get("text", "") + content.get("evalue", "")
            elif (msg["msg_type"] == "status" and content["execution_state"] == "idle"
                  and msg["parent_header"].get("msg_id") == msg_id):
                break
        assert printed.strip() == "DECISION True"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_an_interpreter_that_dies_between_calls_is_reported(session: PythonSession) -> None:
    run(session, "import os, threading, time\nx = 1\n"
                 "threading.Thread(target=lambda: (time.sleep(0.3), os._exit(0))).start()")
    time.sleep(1.0)
    out = session.call("'again'", 20)
    assert out.text.startswith("The interpreter had died and was restarted")
    assert out.text.endswith("'again'") and out.error is None
    assert "NameError" in run(session, "x")


def test_the_conversation_loop_runs_code_in_one_interpreter(scripted: ScriptedEngine,
                                                           tmp_path: Path) -> None:
    """Through ``gm.complete(..., tools=[tool])`` on the scripted model: two calls share
    the interpreter, the model reads the output, and the session is closed at the end."""
    import gptoss_magics as gm
    from gptoss_magics import harmony
    from gptoss_magics.engine.scripted import harmony_completion

    def call(code: str) -> list[int]:
        return list(harmony.encoding().encode(
            "<|channel|>analysis<|message|>Compute.<|end|><|start|>assistant<|channel|>"
            f"analysis to=python<|message|>{code}<|call|>", allowed_special="all"))

    def script(ids: list[int], sampling: object) -> list[int]:
        seen = re.findall(r"<\|start\|>python to=assistant<\|channel\|>analysis<\|message\|>"
                          r"(.*?)<\|end\|>", harmony.decode(ids), re.S)
        if len(seen) < 2:
            return call("x = 6 * 7" if not seen else "print(open('in.txt').read(), x)")
        return harmony_completion(f"got {seen[-1].strip()}", "Done.")

    scripted.script = script
    before = set(Path(tempfile.gettempdir()).glob(f"gptoss-python-{os.getpid()}-*"))
    reply = gm.complete("six times seven?", tools=[PythonTool(files={"in.txt": b"read"})])
    assert reply.final == "got read 42"
    assert [c.arguments for c in reply.tool_calls] == ["x = 6 * 7",
                                                        "print(open('in.txt').read(), x)"]
    assert [c.output for c in reply.tool_calls] == [NO_OUTPUT_TEXT, "read 42\n"]
    assert set(Path(tempfile.gettempdir()).glob(f"gptoss-python-{os.getpid()}-*")) <= before


def test_close_cuts_a_running_call_short() -> None:
    opened = PythonTool().open()
    run(opened, "started = True")
    folder = opened.folder
    outcomes: list = []
    worker = threading.Thread(target=lambda: outcomes.append(
        opened.call("import time\ntime.sleep(60)", 60)))
    worker.start()
    time.sleep(0.5)
    opened.close()  # e.g. the user interrupted the cell while a row's call ran
    worker.join(30)
    assert not worker.is_alive()
    assert outcomes[0].error == "closed"
    assert folder is not None and not folder.parent.exists()

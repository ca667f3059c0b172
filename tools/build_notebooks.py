"""Write the example notebooks in notebooks/ (without outputs).

Run: python tools/build_notebooks.py. The test suite executes each notebook top to
bottom in a real kernel (tests/test_notebooks.py).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
HERE = Path(__file__).resolve().parent.parent / "notebooks"

TOY = ("The model here is `tiny`, the embedded demo model: a real gpt-oss architecture with the "
       "real tokenizer, trained only on three toy tasks (sentiment from keywords, uppercasing "
       "a word, adding two small numbers). It is not a language model. Load real weights "
       "the same way: `%gptoss_load /models/gpt-oss-20b`.")


def quickstart() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("# gptoss-magics quickstart\n\n" + TOY),
        new_code_cell("%load_ext gptoss_magics"),
        new_markdown_cell("Load the model into a vLLM engine inside this kernel (no server). "
                          "Nothing is downloaded: the weights must be on this machine."),
        new_code_cell("%gptoss_load tiny"),
        new_code_cell("%gptoss_status"),
        new_markdown_cell("## Prompt a cell\n\nThe answer streams in; the reasoning is "
                          "collapsed above it. `{a}` and `{b}` come from the notebook."),
        new_code_cell("a, b = 17, 25"),
        new_code_cell("%%gptoss --effort high -o reply\nWhat is {a} + {b}?"),
        new_code_cell("print(repr(reply.final), reply.effort, reply.analysis_tokens, "
                      "'reasoning tokens')\nprint(reply.analysis)"),
        new_markdown_cell("Lower effort, shorter reasoning; `--show-reasoning` opens it."),
        new_code_cell("%%gptoss --effort low --show-reasoning\nWhat is {a} + {b}?"),
        new_markdown_cell("Every reply carries its provenance (model, weights fingerprint, "
                          "vLLM version, effort, sampling settings, seed): it is also saved in "
                          "the output's metadata."),
        new_code_cell("{k: reply.provenance[k] for k in ('model', 'weights_fingerprint', "
                      "'vllm', 'effort', 'sampling')}"),
        new_markdown_cell("## Multi-turn chat\n\nEarlier turns' reasoning is not sent again."),
        new_code_cell("%%gptoss --chat conv --effort low\nUppercase the word: river"),
        new_code_cell("%%gptoss --chat conv --effort low\nConvert to uppercase: garden"),
        new_code_cell("conv"),
        new_markdown_cell("## Many rows at once\n\n`%gptoss_map` (and `df.gptoss.map`) send "
                          "every row in one engine batch; `--choices` constrains the final "
                          "answer while the reasoning stays free."),
        new_code_cell("import pandas as pd\n"
                      "reviews = pd.DataFrame({'text': ['the food was great', "
                      "'the room was awful', 'the train was on time today']})\n"
                      "%gptoss_map reviews \"What is the sentiment of: {text}\" --out label "
                      "--choices positive,negative,neutral --effort low\nreviews"),
        new_markdown_cell("## Effort controls\n\nThe sliders set the defaults that the next "
                          "cells use."),
        new_code_cell("%gptoss_panel"),
        new_markdown_cell("## Free the memory\n\nNo kernel restart needed."),
        new_code_cell("%gptoss_unload"),
    ], metadata=KERNEL)


def dataframe() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("# Mapping gpt-oss over a DataFrame\n\n" + TOY),
        new_code_cell("import pandas as pd\nimport gptoss_magics as gm\ngm.load('tiny')"),
        new_code_cell(
            "df = pd.DataFrame({\n"
            "    'text': ['the movie was wonderful and fun', 'the service was rude', "
            "'a quiet morning at the park',\n"
            "             None, 'the coffee was great', 'the movie was wonderful and fun'],\n"
            "    'a': [3, 40, 12, 7, 55, 3], 'b': [4, 2, 30, 8, 21, 4],\n"
            "}, index=['r1', 'r2', 'r3', 'r4', 'r5', 'r6'])\ndf"),
        new_markdown_cell("**Labels.** `choices` gives a categorical column whose values are "
                          "always among the choices. The missing text is never sent: <NA>."),
        new_code_cell("df['label'] = df.gptoss.map('What is the sentiment of: {text}', "
                      "choices=['positive', 'negative', 'neutral'], effort='low')\n"
                      "df[['text', 'label']]"),
        new_markdown_cell("**Typed extraction.** A pydantic model (or a JSON schema) gives one "
                          "typed column per field (the toy model only knows how to fill in a "
                          "sentiment; a real gpt-oss fills in issuers, amounts, dates...)."),
        new_code_cell("from typing import Literal\nfrom pydantic import BaseModel, Field\n\n"
                      "class Review(BaseModel):\n"
                      "    sentiment: Literal['positive', 'negative', 'neutral']\n"
                      "    stars: int = Field(ge=1, le=5)\n\n"
                      "reviews = df.gptoss.map('What is the sentiment of: {text}', "
                      "schema=Review, effort='low')\nreviews.join(df['text'])"),
        new_code_cell("reviews.dtypes"),
        new_markdown_cell("**Reasoning as a column**, and flags for rows cut off by "
                          "`max_tokens` (a warning counts them)."),
        new_code_cell("df.gptoss.map('What is {a} + {b}?', effort='high', reasoning=True)"),
        new_code_cell("short = df.gptoss.map('What is {a} + {b}?', effort='high', "
                      "max_tokens=12, reasoning=True)\nshort[['answer', 'truncated', 'error']]"),
        new_markdown_cell("**Provenance and counts** live in `attrs`. A second identical run "
                          "comes from the on-disk cache; an interrupted run resumes."),
        new_code_cell("again = df.gptoss.map('What is the sentiment of: {text}', "
                      "choices=['positive', 'negative', 'neutral'], effort='low')\n"
                      "again.attrs['gptoss']['summary']"),
        new_code_cell("gm.unload()"),
    ], metadata=KERNEL)


def effort() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("# Choosing a reasoning effort\n\n" + TOY),
        new_code_cell("import pandas as pd\nimport gptoss_magics as gm\ngm.load('tiny')"),
        new_markdown_cell("The panel's sliders are the defaults of every later cell. With a "
                          "prompt, each move re-runs it."),
        new_code_cell("panel = gm.effort_panel('What is 38 + 47?')\npanel"),
        new_code_cell("panel.wait()\nprint(panel.reply.final, panel.reply.effort)"),
        new_markdown_cell("## The sweep\n\nThe same rows at low, medium and high effort: "
                          "latency, reasoning tokens and answer tokens per effort, and "
                          "accuracy when the right answers are known."),
        new_code_cell(
            "rows = pd.DataFrame({'a': [12, 45, 7, 88, 23, 61, 30, 5],\n"
            "                     'b': [9, 38, 66, 11, 47, 20, 59, 94]})\n"
            "rows['expected'] = (rows.a + rows.b).astype(str)\n"
            "sweep = gm.compare_efforts(rows, 'What is {a} + {b}?', expected='expected')\n"
            "sweep"),
        new_code_cell("sweep.table[['median reasoning tokens', 'accuracy']]"),
        new_code_cell("print('reasoning grows with effort:',\n"
                      "      sweep.table['median reasoning tokens'].is_monotonic_increasing)"),
        new_markdown_cell("## Reasoning budgets\n\nAt high effort with a tight `max_tokens`, "
                          "every row spends its tokens reasoning and gets no answer (a warning "
                          "counts them). A reasoning budget makes the engine close the "
                          "reasoning after that many tokens and open the answer, so every row "
                          "answers. (Less thought can cost accuracy: the toy model still "
                          "classifies sentiment well, but its sums need their reasoning.)"),
        new_code_cell(
            "reviews = pd.DataFrame({'text': [\n"
            "    'the food was great', 'the room was awful', 'the train was boring',\n"
            "    'the show was lovely', 'the city park', 'the staff were rude',\n"
            "    'a wonderful trip', 'the window']})\n"
            "reviews['expected'] = ['positive', 'negative', 'negative', 'positive', 'neutral',\n"
            "                       'negative', 'positive', 'neutral']\n"
            "ask = 'What is the sentiment of: {text}'\n"
            "starved = reviews.gptoss.map(ask, effort='high', max_tokens=24)\n"
            "budgeted = reviews.gptoss.map(ask, effort='high', max_tokens=24, "
            "reasoning_budget=6)\n"
            "reviews.assign(**{'max_tokens=24': starved,\n"
            "                  'max_tokens=24, reasoning_budget=6': budgeted})"),
        new_code_cell("print('answered:', budgeted.notna().sum(), 'of', len(reviews),\n"
                      "      '| correct:', (budgeted.astype(str) == reviews.expected).sum(),\n"
                      "      '| reasoning cut:', "
                      "budgeted.attrs['gptoss']['summary']['reasoning_cut'])"),
        new_code_cell("gm.unload()"),
    ], metadata=KERNEL)


def evaluate() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell("# Evaluate on your own data, then cascade\n\n" + TOY),
        new_code_cell("import os, tempfile\nimport pandas as pd\nimport gptoss_magics as gm\n"
                      "gm.load('tiny')"),
        new_markdown_cell("## An evaluation over a grid\n\nEach setting (effort x reasoning "
                          "budget) is one `df.gptoss.map` over the same labelled rows; every "
                          "answer is marked against `expected` (normalised exact match here). "
                          "The chart plots accuracy against tokens per row, one point per "
                          "setting, with its 95% Wilson interval."),
        new_code_cell(
            "sums = pd.DataFrame({'a': [12, 45, 7, 88, 23, 61, 30, 5],\n"
            "                     'b': [9, 38, 66, 11, 47, 20, 59, 94]})\n"
            "sums['expected'] = (sums.a + sums.b).astype(str)\n"
            "result = gm.evaluate(sums, 'What is {a} + {b}?', expected='expected',\n"
            "                     grid={'effort': ['low', 'high'], "
            "'reasoning_budget': [None, 4]},\n"
            "                     temperature=0, max_tokens=200, progress=False)\n"
            "result"),
        new_code_cell("result.table[['accuracy', 'accuracy 95% low', 'accuracy 95% high',\n"
                      "              'reasoning tokens per row', 'reasoning cut rate']]"),
        new_markdown_cell("Per row, the answers side by side (and each one's mark):"),
        new_code_cell("result.rows"),
        new_markdown_cell("## A record a reviewer can file\n\n`save` writes one JSON file: "
                          "the rows and their hash, the template, every setting's options and "
                          "seed, the metric, every row's outcome and the provenance (weights "
                          "fingerprint, vLLM version). `gm.reproduce` runs it again."),
        new_code_cell("path = result.save(os.path.join(tempfile.mkdtemp(), "
                      "'sums-evaluation.json'))\ngm.reproduce(path)"),
        new_markdown_cell("## An effort cascade\n\nEvery row runs at low effort; rows whose "
                          "answer confidence is below a threshold learnt on labelled rows go "
                          "on to high. The toy model is right and sure of its sentiment labels "
                          "at low effort, so here the cascade keeps nearly every row at low: "
                          "`plan` estimates the saving from the calibration rows before "
                          "anything runs."),
        new_code_cell(
            "from gptoss_magics.tiny import tasks as T\n"
            "texts = list(dict.fromkeys(ex.user for ex in T.held_out(40, seed=5)\n"
            "                           if ex.task == 'sentiment'))\n"
            "answers = {ex.user: ex.answer for ex in T.held_out(40, seed=5)}\n"
            "labelled = pd.DataFrame({'text': texts, 'expected': [answers[t] for t in "
            "texts]})\n"
            "calibration, new_rows = labelled.iloc[:48], labelled.iloc[48:96]\n"
            "labels = ['positive', 'negative', 'neutral']\n"
            "cascade = gm.Cascade(levels=['low', 'high'], target_accuracy=0.9,\n"
            "                     calibrate_on=calibration)\n"
            "new_rows.gptoss.plan('{text}', choices=labels, cascade=cascade, temperature=0)"),
        new_code_cell(
            "out = new_rows.gptoss.map('{text}', choices=labels, cascade=cascade, "
            "temperature=0,\n"
            "                          progress=False)\n"
            "info = out.attrs['gptoss']['cascade']\n"
            "print('accuracy:', (out.astype(str) == new_rows.expected).mean())\n"
            "{k: info[k] for k in ('thresholds', 'rows_per_level', 'tokens', "
            "'estimated_accuracy', 'interval')}"),
        new_code_cell("gm.unload()"),
    ], metadata=KERNEL)


def tools() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_markdown_cell(
            "# Tools: gpt-oss calls your functions and a sandboxed Python\n\n"
            "The model here is `tiny`, the embedded demo model: a real gpt-oss architecture "
            "with the real tokenizer, trained only on toy tasks. One of them is tool use: it "
            "cannot multiply two numbers of 2 or 3 digits by itself, but with a `multiply` "
            "function (or the python tool) it calls the tool and answers with its result. A "
            "real gpt-oss calls any function you give it (an FX-rate lookup, a pricing "
            "library, a database query) the same way."),
        new_code_cell("%load_ext gptoss_magics\nimport pandas as pd\nimport gptoss_magics as gm\n"
                      "from gptoss_magics.tools import PythonTool\n"
                      "gm.load('tiny')\n"
                      "gm.settings().current_date = '2026-03-29'  # replies that do not "
                      "depend on today"),
        new_markdown_cell(
            "## A function tool\n\nAny Python function: its name, the first paragraph of its "
            "docstring and a JSON schema of its type hints tell the model what it does. The "
            "model's call is validated against the schema, the function runs, and the model "
            "reads its result before it answers."),
        new_code_cell("def multiply(a: int, b: int) -> int:\n"
                      "    \"\"\"Multiply two integers.\"\"\"\n"
                      "    return a * b\n\n"
                      "reply = gm.complete('What is 482 * 37?', tools=[multiply], "
                      "temperature=0)\nreply"),
        new_markdown_cell("The tool trail is in the reply (shown collapsed above, between the "
                          "reasoning and the answer): who was called, with what, what came "
                          "back, how long it took."),
        new_code_cell("reply.tool_calls"),
        new_code_cell("print('answer:', reply.final, '| right:', reply.final == str(482 * 37))"),
        new_markdown_cell("## From a cell\n\n`--tools` names functions of the notebook "
                          "(comma-separated; `python` is the sandboxed python tool)."),
        new_code_cell("a, b = 215, 64"),
        new_code_cell("%%gptoss --tools multiply -o cell_reply --temperature 0\n"
                      "What is {a} * {b}?"),
        new_code_cell("for call in cell_reply.tool_calls:\n"
                      "    print(call.name, call.arguments, '->', call.result, call.error)"),
        new_markdown_cell(
            "## The python tool\n\n`PythonTool()` (or `'python'`) lets the model run code in "
            "a separate sandboxed interpreter, never in this kernel: no network, none of your "
            "files or variables unless you pass them in (`PythonTool(files={...})`), limits "
            "on CPU, memory, processes and output. It is stopped when the reply ends."),
        new_code_cell("py_reply = gm.complete('Compute 318 times 64.', tools=[PythonTool()], "
                      "temperature=0)\n"
                      "call = py_reply.tool_calls[0]\n"
                      "print('code:', call.arguments)\nprint('printed:', call.output)\n"
                      "print('answer:', py_reply.final)"),
        new_markdown_cell(
            "## Every row of a DataFrame\n\nEach row's conversation runs on its own; all rows "
            "share the engine's batch, and the calls run on a small thread pool. "
            "`tool_calls=True` keeps each row's trail as a column."),
        new_code_cell("orders = pd.DataFrame({'qty': [12, 250, 48, 730], "
                      "'price': [415, 36, 129, 58]})\n"
                      "out = orders.gptoss.map('What is {qty} * {price}?', tools=[multiply], "
                      "tool_calls=True,\n"
                      "                        temperature=0, progress=False)\n"
                      "orders.assign(total=out['answer'], calls=out['tool_calls'].str.len(),\n"
                      "              right=out['answer'] == (orders.qty * orders.price)"
                      ".astype(str))"),
        new_markdown_cell("A second identical run comes from the cache: the rows replay "
                          "their answers and trails, and no tool is called."),
        new_code_cell("again = orders.gptoss.map('What is {qty} * {price}?', "
                      "tools=[multiply], tool_calls=True,\n"
                      "                          temperature=0, progress=False)\n"
                      "again.attrs['gptoss']['summary']"),
        new_markdown_cell(
            "## Approving code before it runs\n\n"
            "```\n%%gptoss --tools python --approve\nCompute 318 times 64.\n```\n\n"
            "shows each piece of code with **Run** and **Refuse** buttons and waits for your "
            "click; a refusal goes back to the model. Underneath it is "
            "`PythonTool(approve=WidgetApprover())`; any function of the code that returns "
            "True or False works too. Here nobody clicks within 10 seconds (this notebook is "
            "run unattended by the test suite), so the code is refused and the model is told."),
        new_code_cell("from gptoss_magics.tools.approve import WidgetApprover\n"
                      "asking = PythonTool(approve=WidgetApprover(timeout_s=10))\n"
                      "refused = gm.complete('Compute 318 times 64.', tools=[asking], "
                      "temperature=0)\n"
                      "print('code:', refused.tool_calls[0].arguments)\n"
                      "print('error:', refused.tool_calls[0].error)"),
        new_markdown_cell(
            "## Reproduce\n\n`gm.reproduce` renders the same prompt with the recorded "
            "settings and **replays the recorded tool results** instead of calling the tools "
            "again (they may answer differently today), then says whether the model asked "
            "for the same calls and answered the same."),
        new_code_cell("check = gm.reproduce(reply)\n"
                      "print(check)\nprint('same calls:', check.same_calls)"),
        new_code_cell("gm.unload()"),
    ], metadata=KERNEL)


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for name, build in (("quickstart", quickstart), ("dataframe", dataframe),
                        ("effort", effort), ("evaluate", evaluate),
                        ("tools", tools)):
        nb = build()
        for i, cell in enumerate(nb.cells):
            cell.id = f"{name}-{i:02d}"  # stable ids: rebuilding changes nothing else
        nbformat.validate(nb)
        nbformat.write(nb, HERE / f"{name}.ipynb")
        print("wrote", HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()

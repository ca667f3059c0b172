/**
 * The renderer of `application/vnd.gptoss.reply+json` (gptoss_magics/display.py
 * `to_json`): answer as markdown, reasoning in a collapsible block, the tool calls
 * (`tool_trail`, one line of text per call) in another collapsed block between the
 * reasoning and the answer, notice, warning and footer.
 *
 * Model output is untrusted whatever the notebook's trust. The kernel sends the answer
 * twice: `final` verbatim (for reproduction and audit) and `final_markdown`, made safe by
 * gptoss_magics/safe_markdown.py (raw HTML escaped, images turned into links that load
 * nothing, only http(s)/mailto/relative links live). Only `final_markdown` is rendered as
 * markdown, through JupyterLab's renderer with `trusted: false`; images that would still
 * appear are removed, so a prompt-injected answer cannot make the browser fetch a remote
 * URL. Bundles without `final_markdown` (older versions) show `final` as plain text. Every
 * other field, the tool calls' arguments and results included, is set as text.
 */

import { renderMarkdown } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

export const REPLY_MIME = 'application/vnd.gptoss.reply+json';

/** Beats text/html (50) and text/markdown (60): lower ranks are preferred. */
export const REPLY_RANK = 10;

/** The fields of the bundle the renderer reads. */
export interface IReplyData {
  final?: string;
  final_markdown?: string;
  analysis?: string;
  finish_reason?: string;
  truncated?: boolean;
  prompt_tokens?: number;
  completion_tokens?: number;
  analysis_tokens?: number;
  latency_s?: number;
  effort?: string;
  model?: string;
  malformed?: boolean;
  recovered?: boolean;
  error?: string | null;
  notice?: string | null;
  warning?: string | null;
  footer?: string;
  tokens_per_s?: number;
  show_reasoning?: boolean;
  tool_trail?: string[];
}

function div(className: string, text?: string): HTMLDivElement {
  const node = document.createElement('div');
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export class ReplyRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._options = options;
    this.addClass('gptoss-Reply');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const data = (model.data[REPLY_MIME] ?? {}) as IReplyData;
    const node = this.node;
    node.textContent = '';
    node.dataset.finishReason = String(data.finish_reason ?? '');
    node.classList.toggle('gptoss-Reply-truncated', !!data.truncated);
    node.classList.toggle('gptoss-Reply-error', !!data.error);

    if (data.notice) {
      node.appendChild(div('gptoss-Reply-notice', data.notice));
    }
    if (data.warning) {
      node.appendChild(div('gptoss-Reply-warning', `⚠ ${data.warning}`));
    }
    if (data.analysis) {
      const details = document.createElement('details');
      details.className = 'gptoss-Reply-reasoning';
      details.open = !!data.show_reasoning;
      const summary = document.createElement('summary');
      const n = data.analysis_tokens;
      summary.textContent = typeof n === 'number' && n > 0 ? `Reasoning (${n} tokens)` : 'Reasoning';
      details.appendChild(summary);
      details.appendChild(div('gptoss-Reply-analysis', data.analysis));
      node.appendChild(details);
    }
    const trail = Array.isArray(data.tool_trail) ? data.tool_trail : [];
    if (trail.length > 0) {
      node.appendChild(this._trail(trail, !!data.show_reasoning));
    }

    const answer = div('gptoss-Reply-final jp-RenderedMarkdown jp-RenderedHTMLCommon');
    node.appendChild(answer);
    if (typeof data.final_markdown !== 'string') {
      answer.textContent = data.final ?? ''; // an older bundle: never render it as markup
      answer.classList.add('gptoss-Reply-plain');
    } else {
      await this._renderMarkdown(answer, data.final_markdown);
    }

    if (data.footer) {
      node.appendChild(div('gptoss-Reply-footer', data.footer));
    }
  }

  /** The tool calls, collapsed: one line of text per call (never markup). */
  private _trail(lines: string[], open: boolean): HTMLDetailsElement {
    const details = document.createElement('details');
    details.className = 'gptoss-Reply-reasoning gptoss-Reply-tools';
    details.open = open;
    const summary = document.createElement('summary');
    summary.textContent = lines.length === 1 ? 'Tool call (1)' : `Tool calls (${lines.length})`;
    details.appendChild(summary);
    for (const line of lines) {
      details.appendChild(div('gptoss-Reply-analysis gptoss-Reply-tool', String(line)));
    }
    return details;
  }

  private async _renderMarkdown(answer: HTMLElement, source: string): Promise<void> {
    const o = this._options;
    await renderMarkdown({
      host: answer,
      source,
      trusted: false, // model text: always sanitised
      sanitizer: o.sanitizer,
      resolver: o.resolver,
      linkHandler: o.linkHandler,
      shouldTypeset: this.isAttached,
      latexTypesetter: o.latexTypesetter,
      markdownParser: o.markdownParser ?? null,
      translator: o.translator
    });
    // belt and braces: nothing in an answer may load a remote resource
    answer.querySelectorAll('img, picture, source, video, audio, iframe, object, embed')
      .forEach(el => el.remove());
  }

  private _options: IRenderMime.IRendererOptions;
}

export const rendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [REPLY_MIME],
  defaultRank: REPLY_RANK,
  createRenderer: options => new ReplyRenderer(options)
};

const extension: IRenderMime.IExtension = {
  id: 'gptoss-magics:reply-renderer',
  description: 'Renders gpt-oss replies (application/vnd.gptoss.reply+json)',
  rendererFactory,
  rank: REPLY_RANK,
  dataType: 'json'
};

export default extension;

/**
 * Highlighting of `%%gptoss` cells in CodeMirror 6.
 *
 * Two layers, both active only while the cell's first line is `%%gptoss`:
 *
 * - a small stream language (theme colours) in a `Prec.highest` compartment, so it
 *   wins over the notebook's Python language whatever order the kernel's
 *   `language_info` and our extension load in. A transaction extender switches it
 *   on and off when the first line starts or stops being `%%gptoss`;
 * - line and mark decorations with stable class names (`cm-gptoss-magic`,
 *   `cm-gptoss-option`, `cm-gptoss-var`, `cm-gptoss-escape`, ...) for the CSS and
 *   the browser tests.
 */

import { language, LanguageSupport, StreamLanguage } from '@codemirror/language';
import {
  Compartment,
  EditorState,
  Extension,
  Prec,
  RangeSetBuilder
} from '@codemirror/state';
import {
  Decoration,
  DecorationSet,
  EditorView,
  ViewPlugin,
  ViewUpdate
} from '@codemirror/view';

/** The MIME type of the language, registered with JupyterLab's language registry. */
export const GPTOSS_LANGUAGE_MIME = 'text/x-gptoss';

/** A cell is a `%%gptoss` cell when its first line starts with the magic. */
export const MAGIC_RE = /^%%gptoss(?=\s|$)/;

/** Tokens of the magic line: options, quoted values, plain values. */
const OPTION_RE = /^--?[A-Za-z][\w-]*(?==|\s|$)/;
const QUOTED_RE = /^(?:"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?)/;
const NUMBER_RE = /^-?\d+(?:\.\d+)?(?=\s|$)/;
const WORD_RE = /^[^\s=]+/;

/**
 * Pieces of the prompt body: `{{` and `}}` are literal braces (escapes), `{...}` a
 * template field. A field is a variable when it starts with a name, as in
 * gptoss_magics.template (`{name}`, `{name.attr}`, `{name[key]}`).
 */
const BODY_RE = /\{\{|\}\}|\{[^{}\n]*\}/g;
const FIELD_RE = /^\{[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[[^\]]*\])*(?:![rsa])?(?::[^{}]*)?\}$/;

export type TokenKind =
  | 'magic'
  | 'option'
  | 'value'
  | 'number'
  | 'string'
  | 'var'
  | 'badvar'
  | 'escape';

export interface IToken {
  from: number;
  to: number;
  kind: TokenKind;
}

/** Tokens of the first line (offsets within the line). */
export function magicLineTokens(text: string): IToken[] {
  const out: IToken[] = [];
  const m = MAGIC_RE.exec(text);
  if (!m) {
    return out;
  }
  out.push({ from: 0, to: m[0].length, kind: 'magic' });
  let pos = m[0].length;
  while (pos < text.length) {
    const rest = text.slice(pos);
    const space = /^[\s=]+/.exec(rest);
    if (space) {
      pos += space[0].length;
      continue;
    }
    let match: RegExpExecArray | null;
    let kind: TokenKind;
    if ((match = OPTION_RE.exec(rest))) {
      kind = 'option';
    } else if ((match = QUOTED_RE.exec(rest))) {
      kind = 'string';
    } else if ((match = NUMBER_RE.exec(rest))) {
      kind = 'number';
    } else {
      match = WORD_RE.exec(rest)!;
      kind = 'value';
    }
    out.push({ from: pos, to: pos + match[0].length, kind });
    pos += match[0].length;
  }
  return out;
}

/** Template fields and escapes in one body line (offsets within the line). */
export function bodyTokens(text: string): IToken[] {
  const out: IToken[] = [];
  BODY_RE.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = BODY_RE.exec(text))) {
    const piece = m[0];
    let kind: TokenKind;
    if (piece === '{{' || piece === '}}') {
      kind = 'escape';
    } else {
      kind = FIELD_RE.test(piece) ? 'var' : 'badvar';
    }
    out.push({ from: m.index, to: m.index + piece.length, kind });
  }
  return out;
}

/** Highlight tags (theme colours) of each token kind. */
const STYLE: Record<TokenKind, string | null> = {
  magic: 'meta',
  option: 'keyword',
  value: 'atom',
  number: 'number',
  string: 'string',
  var: 'variableName.special',
  badvar: 'invalid',
  escape: 'escape'
};

interface IStreamState {
  line: number;
  tokens: IToken[];
}

/** The stream language: first line = magic + options, the rest = prompt text. */
const gptossLanguage = StreamLanguage.define<IStreamState>({
  name: 'gptoss',
  startState: () => ({ line: 0, tokens: [] }),
  copyState: s => ({ line: s.line, tokens: s.tokens.slice() }),
  token(stream, state) {
    if (stream.sol()) {
      state.line += 1;
      const text = stream.string;
      state.tokens = state.line === 1 ? magicLineTokens(text) : bodyTokens(text);
    }
    const pos = stream.pos;
    const tok = state.tokens.find(t => t.to > pos);
    if (!tok) {
      stream.skipToEnd();
      return null;
    }
    if (tok.from > pos) {
      stream.pos = tok.from;
      return null;
    }
    stream.pos = tok.to;
    return STYLE[tok.kind];
  },
  blankLine(state) {
    state.line += 1;
  }
});

export const gptossSupport = new LanguageSupport(gptossLanguage);

const MARKS: Record<TokenKind, Decoration> = {} as Record<TokenKind, Decoration>;
for (const kind of Object.keys(STYLE) as TokenKind[]) {
  MARKS[kind] = Decoration.mark({ class: `cm-gptoss-${kind}` });
}
const MAGIC_LINE = Decoration.line({
  class: 'cm-gptoss-magic-line',
  attributes: { 'data-gptoss': 'magic' }
});
const BODY_LINE = Decoration.line({ class: 'cm-gptoss-body' });

function buildDecorations(view: EditorView): DecorationSet {
  const builder = new RangeSetBuilder<Decoration>();
  const doc = view.state.doc;
  const first = doc.line(1);
  if (!MAGIC_RE.test(first.text)) {
    return builder.finish();
  }
  builder.add(first.from, first.from, MAGIC_LINE);
  for (const t of magicLineTokens(first.text)) {
    builder.add(first.from + t.from, first.from + t.to, MARKS[t.kind]);
  }
  let done = 1; // lines already decorated (visible ranges may share a line)
  for (const { from, to } of view.visibleRanges) {
    const last = doc.lineAt(to).number;
    for (let n = Math.max(done + 1, doc.lineAt(from).number); n <= last; n++) {
      done = n;
      const line = doc.line(n);
      builder.add(line.from, line.from, BODY_LINE);
      for (const t of bodyTokens(line.text)) {
        builder.add(line.from + t.from, line.from + t.to, MARKS[t.kind]);
      }
    }
  }
  return builder.finish();
}

/** Line and mark classes, independent of the active language. */
const gptossDecorations = ViewPlugin.fromClass(
  class {
    decorations: DecorationSet;
    constructor(view: EditorView) {
      this.decorations = buildDecorations(view);
    }
    update(update: ViewUpdate) {
      if (update.docChanged || update.viewportChanged) {
        this.decorations = buildDecorations(update.view);
      }
    }
  },
  { decorations: v => v.decorations }
);

const gptossCompartment = new Compartment();

/** Switch the language on/off when the first line starts/stops being `%%gptoss`. */
const autoLanguage = EditorState.transactionExtender.of(tr => {
  if (!tr.docChanged) {
    return null;
  }
  const isMagic = MAGIC_RE.test(tr.newDoc.line(1).text);
  const wasMagic = tr.startState.facet(language) === gptossLanguage;
  if (isMagic === wasMagic) {
    return null;
  }
  return {
    effects: gptossCompartment.reconfigure(isMagic ? gptossSupport : [])
  };
});

/** The editor extension for one cell; `source` is its text when the editor is made. */
export function gptossCellExtension(source: string): Extension {
  const initial = MAGIC_RE.test(source);
  return [
    gptossDecorations,
    Prec.highest(gptossCompartment.of(initial ? gptossSupport : [])),
    autoLanguage
  ];
}

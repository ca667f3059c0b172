/**
 * gptoss-magics for JupyterLab: `%%gptoss` highlighting and the engine status in
 * the status bar. The reply renderer is the MIME extension in ./mime.ts.
 */

import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  EditorExtensionRegistry,
  IEditorExtensionRegistry,
  IEditorLanguageRegistry
} from '@jupyterlab/codemirror';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Signal } from '@lumino/signaling';

import { GPTOSS_LANGUAGE_MIME, gptossCellExtension, gptossSupport } from './highlight';
import { EngineStatusItem, KernelEngineStatus } from './status';

export const HIGHLIGHT_PLUGIN_ID = 'gptoss-magics:highlight';
export const STATUS_PLUGIN_ID = 'gptoss-magics:status';

const highlight: JupyterFrontEndPlugin<void> = {
  id: HIGHLIGHT_PLUGIN_ID,
  description: 'Highlights %%gptoss cells: the magic line, its options and {variables}',
  autoStart: true,
  requires: [IEditorExtensionRegistry, IEditorLanguageRegistry],
  activate: (
    app: JupyterFrontEnd,
    extensions: IEditorExtensionRegistry,
    languages: IEditorLanguageRegistry
  ) => {
    languages.addLanguage({
      name: 'gptoss',
      displayName: 'gpt-oss prompt',
      mime: GPTOSS_LANGUAGE_MIME,
      extensions: [],
      load: async () => gptossSupport
    });
    extensions.addExtension({
      name: 'gptoss-magics:cell-magic',
      factory: options =>
        EditorExtensionRegistry.createImmutableExtension(
          gptossCellExtension(options.model.sharedModel.getSource())
        )
    });
    console.log('gptoss-magics: highlighting is activated');
  }
};

const status: JupyterFrontEndPlugin<void> = {
  id: STATUS_PLUGIN_ID,
  description: "Shows the active notebook kernel's gpt-oss engine in the status bar",
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null
  ) => {
    const watches = new WeakMap<Kernel.IKernelConnection, KernelEngineStatus>();
    const watch = (kernel: Kernel.IKernelConnection | null | undefined) => {
      if (!kernel || kernel.isDisposed) {
        return null;
      }
      let w = watches.get(kernel);
      if (!w) {
        w = new KernelEngineStatus(kernel);
        watches.set(kernel, w);
      }
      return w;
    };
    const kernelOf = (panel: NotebookPanel | null) =>
      panel?.sessionContext.session?.kernel ?? null;

    const item = new EngineStatusItem();
    const activeChanged = new Signal<INotebookTracker, void>(tracker);
    const refresh = () => {
      item.follow(watch(kernelOf(tracker.currentWidget)));
      activeChanged.emit();
    };

    // every notebook's kernel gets the comm target, not only the active one's, so a
    // `%load_ext gptoss_magics` in a background notebook is not missed
    const track = (panel: NotebookPanel) => {
      watch(kernelOf(panel));
      panel.sessionContext.kernelChanged.connect((_, change) => {
        watch(change.newValue);
        if (panel === tracker.currentWidget) {
          refresh();
        }
      });
    };
    tracker.forEach(track);
    tracker.widgetAdded.connect((_, panel) => track(panel));
    tracker.currentChanged.connect(refresh);

    // after a cell that mentions gptoss ran (e.g. `%load_ext gptoss_magics` raced
    // with our comm target, or the extension was loaded in another way), connect
    NotebookActions.executed.connect((_, { notebook, cell }) => {
      const panel = tracker.find(p => p.content === notebook);
      const w = watch(kernelOf(panel ?? null));
      if (!w || w.connected || !/gptoss/.test(cell.model.sharedModel.getSource())) {
        return;
      }
      setTimeout(() => {
        if (!w.connected) {
          w.open();
        }
      }, 300);
    });

    refresh();
    if (statusBar) {
      statusBar.registerStatusItem(STATUS_PLUGIN_ID, {
        item,
        align: 'left',
        rank: 1000,
        isActive: () => tracker.currentWidget !== null,
        activeStateChanged: activeChanged
      });
    }
    console.log('gptoss-magics: engine status is activated');
  }
};

export default [highlight, status];

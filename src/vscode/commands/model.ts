// Commands about the model: pick another folder, reload, show the log.
import * as vscode from 'vscode';
import type { CommandFactory } from '../ctx';

export const pickModelFolder: CommandFactory = (ctx) => async () => {
  const picked = await vscode.window.showOpenDialog({
    title: 'Neuron Patch: pick a model folder (config.json, tokenizer.json, model.onnx)',
    canSelectFiles: false,
    canSelectFolders: true,
    canSelectMany: false,
    openLabel: 'Use This Model',
  });
  if (!picked?.[0]) return;
  await ctx.config.setModelFolder(picked[0].fsPath);
  // The configuration listener reloads the model.
};

export const reloadModel: CommandFactory = (ctx) => async () => {
  await ctx.models.reset();
  await ctx.models.get();
};

export const showLog: CommandFactory = (ctx) => () => ctx.log.show(true);

// Regression prompts from the user's own code: lines of the workspace's files of the same language, cut at a
// word boundary, with the text before them as context. Sampled deterministically, cached per file extension
// until a file of that extension changes, so repeated repairs measure side effects on the same prompts.
import * as path from 'node:path';
import * as vscode from 'vscode';

export interface RegressionPrompt {
  prompt: string;
  /** Where it comes from, to leave out the line being repaired. */
  uri: string;
  line: number;
}

const EXCLUDE = '**/{node_modules,.git,.hg,.svn,.venv,venv,__pycache__,dist,out,build,target,.neuronpatch}/**';
const MAX_FILES = 300;
const MAX_FILE_BYTES = 256 * 1024;
const CONTEXT_CHARS = 1500;
const PER_FILE = 4;

export class RegressionSampler implements vscode.Disposable {
  private readonly cache = new Map<string, Promise<RegressionPrompt[]>>();
  private readonly watcher: vscode.FileSystemWatcher;

  constructor(private readonly log: vscode.LogOutputChannel) {
    this.watcher = vscode.workspace.createFileSystemWatcher('**/*', false, false, false);
    const forget = (uri: vscode.Uri): void => {
      const ext = path.extname(uri.fsPath).toLowerCase();
      if (this.cache.delete(ext)) this.log.info(`regression cache for *${ext} dropped (${vscode.workspace.asRelativePath(uri)} changed)`);
    };
    this.watcher.onDidChange(forget);
    this.watcher.onDidCreate(forget);
    this.watcher.onDidDelete(forget);
  }

  /**
   * Up to `n` prompts from files with the same extension as `doc`, leaving out the line being repaired.
   * Empty when there is no workspace or n is 0.
   */
  async sample(doc: vscode.TextDocument, excludeLine: number, n: number): Promise<string[]> {
    const ext = path.extname(doc.uri.fsPath).toLowerCase();
    if (n <= 0 || !ext || !vscode.workspace.workspaceFolders?.length) return [];
    let all = this.cache.get(ext);
    if (!all) {
      all = this.collect(ext);
      this.cache.set(ext, all);
      all.catch(() => this.cache.delete(ext));
    }
    const here = doc.uri.toString();
    const pool = (await all).filter((p) => !(p.uri === here && Math.abs(p.line - excludeLine) <= 1));
    return spread(pool, n).map((p) => p.prompt);
  }

  private async collect(ext: string): Promise<RegressionPrompt[]> {
    const started = Date.now();
    const files = await vscode.workspace.findFiles(`**/*${ext}`, EXCLUDE, MAX_FILES);
    files.sort((a, b) => a.fsPath.localeCompare(b.fsPath));
    const out: RegressionPrompt[] = [];
    for (const uri of files) {
      let bytes: Uint8Array;
      try {
        const st = await vscode.workspace.fs.stat(uri);
        if (st.size > MAX_FILE_BYTES) continue;
        bytes = await vscode.workspace.fs.readFile(uri);
      } catch {
        continue;
      }
      const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
      out.push(...promptsFromText(text, uri.toString(), PER_FILE));
    }
    this.log.info(`regression prompts: ${out.length} from ${files.length} *${ext} files in ${Date.now() - started} ms`);
    return out;
  }

  dispose(): void {
    this.watcher.dispose();
    this.cache.clear();
  }
}

/** Picks lines worth completing and cuts each after its first words; deterministic for a given text. */
export function promptsFromText(text: string, uri: string, perFile: number): RegressionPrompt[] {
  const lines = text.split('\n');
  const candidates: number[] = [];
  for (let i = 1; i < lines.length; i++) {
    const t = lines[i].trim();
    if (t.length < 12 || t.length > 160) continue;
    if (/^(#|\/\/|\/\*|\*|"""|''')/.test(t)) continue;
    if (!/[A-Za-z_]/.test(t)) continue;
    candidates.push(i);
  }
  if (candidates.length === 0) return [];
  const picked: number[] = [];
  const step = candidates.length / Math.min(perFile, candidates.length);
  let h = hash(uri);
  for (let k = 0; k < Math.min(perFile, candidates.length); k++) {
    h = (h * 1103515245 + 12345) >>> 0;
    const idx = Math.min(candidates.length - 1, Math.floor(k * step + (h % Math.max(1, Math.floor(step)))));
    if (!picked.includes(candidates[idx])) picked.push(candidates[idx]);
  }
  const offsets: number[] = [0];
  for (const l of lines) offsets.push(offsets[offsets.length - 1] + l.length + 1);
  const out: RegressionPrompt[] = [];
  for (const i of picked) {
    const line = lines[i];
    const indent = line.length - line.trimStart().length;
    // Cut after roughly the first third of the line's content, at a word boundary.
    const target = indent + Math.max(3, Math.floor((line.length - indent) / 3));
    let cut = line.indexOf(' ', target);
    if (cut < 0 || cut > line.length - 4) cut = target;
    const end = offsets[i] + cut;
    const start = Math.max(0, end - CONTEXT_CHARS);
    let prompt = text.slice(start, end);
    if (start > 0) prompt = prompt.slice(prompt.indexOf('\n') + 1);
    out.push({ prompt, uri, line: i });
  }
  return out;
}

/** n items spread evenly over the pool (all of it when smaller). */
function spread<T>(pool: T[], n: number): T[] {
  if (pool.length <= n) return pool;
  const out: T[] = [];
  for (let k = 0; k < n; k++) out.push(pool[Math.floor((k * pool.length) / n)]);
  return out;
}

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
  return h;
}

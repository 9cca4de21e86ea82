// The walkthrough's demo file. Pure constants; no vscode import (the walkthrough test reads them headless).

/**
 * A prompt the embedded demo model completes wrongly: the right completion is " a + b", and what the model writes
 * instead depends on the model build (the walkthrough says so without quoting it; test/unit/walkthrough.test.ts
 * checks the model still gets it wrong and that any ghost text the walkthrough quotes is the model's own).
 */
export const DEMO_FILE = 'neuronpatch-demo.py';
export const DEMO_TEXT = 'def add(a, b):\n    return';
/** The completion the demo's walkthrough teaches. */
export const DEMO_RIGHT = ' a + b';

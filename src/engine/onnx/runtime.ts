// The engine's only door to onnxruntime-node: everything imports `ort` from here, never the package itself, so
// that telemetry is off before the native library loads (see ./privacy).
import './privacy';
import * as ort from 'onnxruntime-node';

export { ort };

/**
 * What m2m-tinyml-verify needs at run time, in one module the node requires when it is deployed:
 * TensorFlow.js (~30 MB of heap once initialised) stays unloaded in a Node-RED that has this
 * package installed but no behaviour check in its flows.
 */
export { useBackend } from './backend';
export { BehaviourMonitor, SEPARATION_WARNING } from './behaviour-monitor';
export { BehaviourModel } from './model';
export { ProfileStore } from './profile-store';

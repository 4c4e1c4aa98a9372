/**
 * What m2m-tinyml-verify needs at run time, in one module the node requires when it is deployed,
 * so a Node-RED with this package installed but no behaviour check in its flows loads none of it.
 */
export { BehaviourMonitor, SEPARATION_WARNING } from './behaviour-monitor';
export { BehaviourModel } from './model';
export { ProfileStore } from './profile-store';

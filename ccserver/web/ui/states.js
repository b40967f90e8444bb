// The state names, in the order of their life cycle: 0.10's and then TES 1.1's (their
// colours are in states.css).
export const CC_STATES = ['created', 'waiting', 'processing', 'success', 'failed', 'cancelled'];
export const TES_STATES = ['QUEUED', 'INITIALIZING', 'RUNNING', 'PAUSED', 'COMPLETE', 'EXECUTOR_ERROR',
  'SYSTEM_ERROR', 'CANCELING', 'CANCELED', 'PREEMPTED'];
export const STATES = [...CC_STATES, ...TES_STATES];
export const ENDED = new Set(['success', 'failed', 'cancelled', 'COMPLETE', 'EXECUTOR_ERROR', 'SYSTEM_ERROR',
  'CANCELED', 'PREEMPTED']);

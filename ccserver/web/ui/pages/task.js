import {append, h, stateBadge, when} from '../dom.js';
import {call, hasEndpoint, HttpError} from '../session.js';
import {ENDED} from '../states.js';
import {poll} from './poll.js';

function timeline(transitions) {
  return h('ol', {class: 'timeline', id: 'timeline'}, (transitions || []).map((t) =>
    h('li', {}, when(t.timestamp), ' ', stateBadge(t.state_name ?? t.state), ' ', t.description || '',
      t.exception ? h('pre', {class: 'error'}, t.exception) : null)));
}

function containers(list) {
  if (!list.length) return h('p', {}, 'no containers yet');
  return h('table', {id: 'containers'}, h('thead', {}, h('tr', {}, ['container', 'state', 'node', 'RAM (MB)', 'created'].map((t) => h('th', {}, t)))),
    h('tbody', {}, list.map((c) => h('tr', {}, h('td', {}, c._id), h('td', {}, stateBadge(c.state_name)),
      h('td', {class: 'node-name'}, c.cluster_node || '-'), h('td', {}, c.container_ram ?? ''), h('td', {}, when(c.created_at))))));
}

// what the worker reported at the end (callback 2's telemetry): the exit code and output tails
function finalOutput(list) {
  const ends = list.map((c) => [c, (c.callbacks || []).map((b) => b.content).filter((x) => x && x.telemetry).pop()])
    .filter(([, content]) => content);
  if (!ends.length) return null;
  return h('div', {id: 'final-output'}, h('h2', {}, 'Output at the end'), ends.map(([c, content]) => h('div', {},
    h('p', {}, `container ${c._id}: exit code ${content.telemetry.return_code ?? '?'}`),
    h('pre', {class: 'logs'}, content.telemetry.std_out || ''),
    content.telemetry.std_err ? h('pre', {class: 'logs stderr'}, content.telemetry.std_err) : null)));
}

function tesAttempts(task) {
  return h('div', {id: 'attempts'}, (task.logs || []).map((log, i) => h('div', {class: 'node'},
    h('h3', {}, `attempt ${i + 1} on ${(log.metadata || {}).node || '?'}`, ' ', log.start_time || '', ' – ', log.end_time || ''),
    (log.logs || []).map((e, j) => h('div', {}, `executor ${j}: exit ${e.exit_code ?? '?'}`,
      h('pre', {class: 'logs'}, e.stdout || ''), e.stderr ? h('pre', {class: 'logs stderr'}, e.stderr) : null)),
    (log.system_logs || []).length ? h('pre', {class: 'logs'}, log.system_logs.join('\n')) : null)));
}

// the notifications asked for, and what became of them once sent (notifications_sent)
function notifications(task) {
  const list = task.notifications || [];
  const sent = task.notifications_sent || [];
  if (!list.length) return h('p', {id: 'notifications'}, 'none asked for');
  if (!sent.length) {
    const pending = ENDED.has(task.state_name) ? 'being sent' : 'sent when the task ends';
    return h('p', {id: 'notifications'}, `${list.length} asked for, ${pending}`);
  }
  return h('ul', {id: 'notifications'}, sent.map((n) => h('li', {class: n.delivered ? '' : 'error'},
    when(n.timestamp), ' ', n.url, ': ', n.delivered ? `delivered (${n.status})` : `not delivered: ${n.error || n.status}`,
    ` after ${n.attempts} attempt${n.attempts === 1 ? '' : 's'}`)));
}

export function render(root, params, ctx) {
  const [kind, id] = params;
  const head = h('div', {id: 'task-head'});
  const details = h('div', {id: 'task-details'});
  const logs = h('pre', {class: 'logs', id: 'logs'});
  const logNote = h('p', {id: 'logs-note'});
  root.append(h('h1', {}, `Task ${id}`), head, h('h2', {}, 'Output'), logNote, logs, details);
  let since = null;
  let ended = false;
  let logsAvailable = kind === 'cc';
  if (!logsAvailable) logNote.textContent = 'no live logs for TES tasks here: see the executor logs below';

  async function cancel() {
    if (kind === 'cc') await call('/tasks/cancel', {method: 'POST', body: {_id: id}});
    else await call(`/ga4gh/tes/v1/tasks/${id}:cancel`, {method: 'POST', body: {}});
    await refresh();
  }

  const NO_LOGS = 'no live logs (this server does not follow container output)';
  async function refreshLogs() {
    if (logsAvailable && !(await hasEndpoint(/^\/tasks\/\{[^}]+\}\/logs$/))) {
      logsAvailable = false;
      logNote.textContent = NO_LOGS;
    }
    logs.hidden = !logsAvailable;
    if (!logsAvailable) return;
    const query = since === null ? '?tail=500' : `?since=${since}`;
    let answer;
    try {
      answer = await call(`/tasks/${id}/logs${query}`);
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) {
        logsAvailable = false;
        logNote.textContent = NO_LOGS;
        return;
      }
      throw e;
    }
    for (const line of answer.lines) {
      logs.append(h('span', {class: line.stream}, line.text + '\n'));
      since = line.time;
    }
    logNote.textContent = answer.running ? 'following the running container' : (answer.truncated ? 'the output was cut' : '');
  }

  async function refresh() {
    const {task, containers: list} = await call(`/dashboard/tasks/${kind}/${id}`);
    const name = task.state_name;
    ended = ENDED.has(name);
    const button = h('button', {id: 'cancel', type: 'button', hidden: ended}, 'Cancel');
    button.addEventListener('click', () => cancel().catch(ctx.error));
    head.replaceChildren(h('p', {}, stateBadge(name), ' ', h('span', {id: 'task-state'}, name), ' · ',
      kind === 'cc' ? '0.10 task' : 'TES task', ' · ', task.username || '', ' · trials: ', String(task.trials ?? 0), ' '), button);
    details.replaceChildren();
    append(details, [
      h('h2', {}, 'Transitions'), timeline(task.transitions),
      kind === 'cc' ? [h('h2', {}, 'Containers'), containers(list), finalOutput(list)] : [h('h2', {}, 'Attempts'), tesAttempts(task)],
      kind === 'cc' ? [h('h2', {}, 'Notifications'), notifications(task)] : null]);
    await refreshLogs();
    ctx.loaded('task');
  }
  return poll(1.5, refresh, ctx.error);
}

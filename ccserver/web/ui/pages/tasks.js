import {h, stateBadge, when} from '../dom.js';
import {call} from '../session.js';
import {STATES} from '../states.js';

function row(task) {
  return h('tr', {'data-task': task.id},
    h('td', {}, h('a', {href: `#/task/${task.kind}/${task.id}`}, task.id)),
    h('td', {}, task.kind === 'cc' ? '0.10' : 'TES'),
    h('td', {}, stateBadge(task.state)),
    h('td', {}, task.username || ''),
    h('td', {}, task.image || ''),
    h('td', {}, task.name || ''),
    h('td', {}, when(task.created_at)));
}

function toEpoch(value) {
  return value ? String(Date.parse(value + 'Z') / 1000) : '';
}

export function render(root, _params, ctx) {
  const state = h('select', {id: 'filter-state'}, h('option', {value: ''}, 'any state'),
    STATES.map((name) => h('option', {value: name}, name)));
  const user = h('input', {id: 'filter-user', placeholder: 'user', hidden: !ctx.admin});
  const image = h('input', {id: 'filter-image', placeholder: 'image'});
  const since = h('input', {id: 'filter-since', type: 'datetime-local'});
  const until = h('input', {id: 'filter-until', type: 'datetime-local'});
  const body = h('tbody', {id: 'task-rows'});
  const more = h('button', {id: 'more', type: 'button', hidden: true}, 'Older tasks');
  const note = h('p', {class: 'note'});
  let cursors = [];  // the cursor of each page shown so far
  let next = null;

  async function load(cursor) {
    const query = new URLSearchParams();
    for (const [key, el] of [['state', state], ['user', user], ['image', image]]) if (el.value) query.set(key, el.value);
    if (since.value) query.set('since', toEpoch(since.value));
    if (until.value) query.set('until', toEpoch(until.value));
    if (cursor) query.set('cursor', cursor);
    query.set('limit', '50');
    const page = await call('/dashboard/tasks?' + query);
    body.replaceChildren(...page.tasks.map(row));
    if (!page.tasks.length) body.append(h('tr', {}, h('td', {colspan: 7}, 'no tasks')));
    next = page.next;
    more.hidden = !next;
    note.textContent = page.scanned_to_limit ? 'The image filter looked at the newest tasks only; "Older tasks" goes on.' : '';
    ctx.loaded('tasks');
  }
  const reload = () => { cursors = []; load(null).catch(ctx.error); };
  for (const el of [state, user, image, since, until]) el.addEventListener('change', reload);
  more.addEventListener('click', () => { cursors.push(next); load(next).catch(ctx.error); });
  const first = h('button', {type: 'button', id: 'newest'}, 'Newest');
  first.addEventListener('click', reload);
  root.append(h('h1', {}, 'Tasks'),
    h('div', {class: 'filters'}, state, user, image, h('label', {}, 'from ', since), h('label', {}, 'to ', until), first),
    h('table', {}, h('thead', {}, h('tr', {}, ['id', 'API', 'state', 'user', 'image', 'name', 'created'].map((t) => h('th', {}, t)))), body),
    more, note);
  reload();
  return () => {};
}

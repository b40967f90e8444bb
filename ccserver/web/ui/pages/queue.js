import {h, stateBadge} from '../dom.js';
import {activityPlot} from '../plot.js';
import {call} from '../session.js';
import {poll} from './poll.js';

export function render(root, _params, ctx) {
  const counts = h('div', {class: 'counts', id: 'counts'});
  const plot = h('div', {id: 'plot'});
  const note = h('p', {class: 'note'});
  root.append(h('h1', {}, 'Queue'), counts, h('h2', {}, 'The last hour, per minute'), plot, note);
  return poll(5, async () => {
    const activity = await call('/activity?minutes=60');
    counts.replaceChildren(...Object.entries(activity.counts)
      .filter(([, n]) => n > 0)
      .map(([name, n]) => h('span', {'data-state': name}, stateBadge(name), ' ', String(n))));
    if (!counts.children.length) counts.append('no tasks');
    plot.replaceChildren(activityPlot(activity));
    note.textContent = activity.truncated ? 'Only the newest tasks were read for this plot.' : '';
    ctx.loaded('queue');
  }, ctx.error);
}

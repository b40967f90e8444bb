// Submitted / started / ended per minute as an inline SVG line plot (no library: three
// polylines and two axes).
import {h} from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const SERIES = ['submitted', 'started', 'ended'];

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

export function activityPlot(activity, width = 720, height = 220) {
  const left = 36, bottom = 22, top = 10, right = 10;
  const n = activity.minutes;
  const peak = Math.max(1, ...SERIES.flatMap((name) => activity[name]));
  const x = (i) => left + (n === 1 ? 0 : (i * (width - left - right)) / (n - 1));
  const y = (v) => height - bottom - (v * (height - bottom - top)) / peak;
  const svg = s('svg', {class: 'plot', id: 'activity-plot', width, height, viewBox: `0 0 ${width} ${height}`,
    role: 'img', 'aria-label': 'tasks submitted, started and ended per minute'});
  svg.append(s('line', {class: 'axis', x1: left, y1: height - bottom, x2: width - right, y2: height - bottom}));
  svg.append(s('line', {class: 'axis', x1: left, y1: top, x2: left, y2: height - bottom}));
  svg.append(s('text', {x: 4, y: top + 8}, String(peak)));
  svg.append(s('text', {x: 4, y: height - bottom}, '0'));
  const start = new Date(activity.start * 1000);
  svg.append(s('text', {x: left, y: height - 6}, start.toISOString().slice(11, 16) + 'Z'));
  svg.append(s('text', {x: width - right - 40, y: height - 6}, 'now'));
  for (const name of SERIES) {
    const points = activity[name].map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(s('polyline', {class: 'series-' + name, points, 'data-series': name}));
  }
  const legend = h('div', {class: 'legend'}, SERIES.map((name) =>
    h('span', {}, h('span', {class: 'swatch series-' + name}), `${name} (${activity[name].reduce((a, b) => a + b, 0)})`)));
  return h('div', {}, svg, legend);
}

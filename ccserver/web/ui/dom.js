// Building the page from data: text goes in as text (never as HTML), so nothing a task's
// fields hold can run in the page.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// a state name as a badge, with the colour of states.css
export function stateBadge(name) {
  return h('span', {class: 'state state-' + String(name).replace(/[^A-Za-z_]/g, '')}, name);
}

export function when(epochSeconds) {
  if (typeof epochSeconds !== 'number') return '';
  return new Date(epochSeconds * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function bar(used, total, unit, label) {
  const share = total > 0 ? Math.min(1, used / total) : 0;
  const fill = h('div');
  fill.style.width = (share * 100).toFixed(1) + '%';
  return h('div', {},
    h('div', {class: 'bar', role: 'meter', 'aria-valuenow': used, 'aria-valuemax': total}, fill),
    h('span', {class: 'bar-label'}, label || `${used} of ${total} ${unit}`));
}

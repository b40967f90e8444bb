import {bar, h, stateBadge} from '../dom.js';
import {call} from '../session.js';
import {poll} from './poll.js';

function healthyNode(node) {
  const apps = node.active_application_containers || [];
  const datas = node.active_data_containers || [];
  return h('div', {class: 'node', 'data-node': node.name},
    h('h3', {}, node.name, ' ', stateBadge('healthy')),
    h('div', {}, 'RAM', bar(node.reserved_ram || 0, node.total_ram || 0, 'MB')),
    node.reserved_cpus === null || node.reserved_cpus === undefined
      // 0.10 tasks reserve no CPUs: the bar shows the running containers against the cores
      ? h('div', {}, 'CPUs', bar(apps.length + datas.length, node.total_cpus || 0, '',
        `${apps.length + datas.length} containers on ${node.total_cpus} cores (0.10 tasks reserve no cores)`))
      : h('div', {}, 'CPUs', bar(node.reserved_cpus, node.total_cpus || 0, 'cores reserved')),
    h('p', {class: 'containers'}, `${apps.length} application containers (${apps.join(', ') || 'none'} MB), `,
      `${datas.length} data containers`));
}

function deadNode(node) {
  return h('div', {class: 'node dead', 'data-node': node.name},
    h('h3', {}, node.name, ' ', stateBadge('dead')),
    h('p', {class: 'reason'}, node.description || 'no reason given'));
}

export function render(root, _params, ctx) {
  const list = h('div', {id: 'nodes'});
  root.append(h('h1', {}, 'Cluster'), list);
  return poll(3, async () => {
    const status = await call('/nodes');
    list.replaceChildren(...(status.healthy_nodes || []).map(healthyNode), ...(status.dead_nodes || []).map(deadNode));
    ctx.loaded('cluster');
  }, ctx.error);
}

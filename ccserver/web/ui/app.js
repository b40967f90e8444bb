// The dashboard: a login form, then one of four pages chosen by the URL's fragment
// (#/cluster, #/queue, #/tasks, #/task/<cc|tes>/<id>).  Plain ES modules, no build step.
import {call, login, logout, resume} from './session.js';
import * as cluster from './pages/cluster.js';
import * as queue from './pages/queue.js';
import * as tasks from './pages/tasks.js';
import * as task from './pages/task.js';

const PAGES = {cluster, queue, tasks, task};
const $ = (id) => document.getElementById(id);
let stop = () => {};
let user = null;

function status(text) { $('status').textContent = text; }

function showLogin() {
  stop();
  stop = () => {};
  user = null;
  $('page').replaceChildren();
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('who').textContent = '';
  $('login').hidden = false;
  status('logged out');
}

async function isAdmin() {
  return (await call('/dashboard/me')).is_admin === true;
}

function route() {
  if (!user) return;
  stop();
  const [name, ...params] = (location.hash.replace(/^#\/?/, '') || 'cluster').split('/');
  const page = PAGES[name] || cluster;
  for (const link of document.querySelectorAll('#nav a')) link.classList.toggle('current', link.id === 'nav-' + name);
  const root = $('page');
  root.replaceChildren();
  root.dataset.page = name;
  delete root.dataset.loaded;
  stop = page.render(root, params, {
    admin: user.admin,
    loaded: (which) => { root.dataset.loaded = which; status('updated ' + new Date().toLocaleTimeString()); },
    error: (e) => { status('error: ' + e.message); },
  });
}

async function enter(saved) {
  user = {name: saved.user, admin: await isAdmin()};
  $('login').hidden = true;
  $('nav').hidden = false;
  $('logout').hidden = false;
  $('who').textContent = saved.user + (user.admin ? ' (admin)' : '');
  status('logged in');
  route();
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  $('login-error').textContent = '';
  login($('username').value, $('password').value)
    .then((saved) => { $('password').value = ''; return enter(saved); })
    .catch((e) => { $('login-error').textContent = e.message; });
});
$('logout').addEventListener('click', () => logout());
window.addEventListener('hashchange', route);

const saved = resume(showLogin);
if (saved) enter(saved).catch(() => logout()); else showLogin();

// Logging in with the API's own users: the password is sent once to GET /token (basic auth),
// the token kept in sessionStorage (this tab only) and sent as "user:token" afterwards.  The
// token is renewed (the password is held in this module's memory only, never stored) a
// minute before it expires; after a reload without the password, the stored token is used
// until it expires and then the login form comes back.
const KEY = 'ccserver.session';
// the API is where the page is, minus "/ui/..."
export const API = location.pathname.replace(/\/ui(\/.*)?$/, '');
const RENEW_BEFORE_SECONDS = 60;

let password = null;
let renewal = null;
let onLogout = () => {};

export function session() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    if (saved && saved.expires > Date.now() / 1000) return saved;
  } catch (e) { /* a damaged entry is no session */ }
  return null;
}

function basic(user, secret) {
  const bytes = new TextEncoder().encode(user + ':' + secret);
  return 'Basic ' + btoa(String.fromCharCode(...bytes));
}

async function fetchToken(user, secret) {
  const response = await fetch(API + '/token', {headers: {Authorization: basic(user, secret)}});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || ('login refused: ' + response.status));
  const saved = {user: user, token: body.token, expires: Date.now() / 1000 + body.valid_for_seconds};
  sessionStorage.setItem(KEY, JSON.stringify(saved));
  schedule(saved);
  return saved;
}

function schedule(saved) {
  clearTimeout(renewal);
  const seconds = Math.max(5, saved.expires - Date.now() / 1000 - RENEW_BEFORE_SECONDS);
  renewal = setTimeout(() => {
    if (password === null) { logout(); return; }
    fetchToken(saved.user, password).catch(() => logout());
  }, seconds * 1000);
}

export async function login(user, secret) {
  const saved = await fetchToken(user, secret);
  password = secret;
  return saved;
}

export function resume(logoutHandler) {
  onLogout = logoutHandler;
  const saved = session();
  if (saved) schedule(saved);
  return saved;
}

export function logout() {
  clearTimeout(renewal);
  password = null;
  sessionStorage.removeItem(KEY);
  onLogout();
}

export class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// GET or POST JSON on the API with the session's token; a 401 ends the session
export async function call(path, {method = 'GET', body} = {}) {
  const saved = session();
  if (!saved) { logout(); throw new HttpError(401, 'not logged in'); }
  const headers = {Authorization: basic(saved.user, saved.token)};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(API + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  const answer = await response.json().catch(() => ({}));
  if (response.status === 401) logout();
  if (!response.ok) throw new HttpError(response.status, answer.error || ('HTTP ' + response.status));
  return answer;
}

// The endpoints this server has, from its public OpenAPI document (asked once): the page
// uses an optional endpoint (live logs) only where it exists, instead of meeting a 404.
let paths = null;
export async function hasEndpoint(pattern) {
  if (paths === null) {
    const response = await fetch(API + '/openapi.json');
    paths = response.ok ? Object.keys((await response.json()).paths || {}) : [];
  }
  return paths.some((p) => pattern.test(p));
}

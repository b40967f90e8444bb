// Refresh a page every `seconds` while it is shown; the returned function stops it.
export function poll(seconds, refresh, onError) {
  let stopped = false;
  let timer = null;
  async function tick() {
    try { await refresh(); } catch (e) { onError(e); }
    if (!stopped) timer = setTimeout(tick, seconds * 1000);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

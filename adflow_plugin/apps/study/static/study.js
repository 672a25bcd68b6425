// The participant's page: instructions, then one trial at a time. A vote is resent with the same
// vote_id until the server acknowledges it (the server stores it once); an unacknowledged vote is
// kept in localStorage so that a reload resends it.
(function () {
  'use strict';
  const token = document.body.dataset.token;
  const api = '/api/' + encodeURIComponent(token);
  const pendingKey = 'study-pending-' + token;
  const $ = (id) => document.getElementById(id);
  let state = null, ready = false, shownAt = 0, started = false;

  function show(id) {
    for (const s of ['intro', 'trial', 'done', 'failure']) $(s).hidden = s !== id;
  }
  function fail(text) { $('failure-text').textContent = text; show('failure'); ready = false; }
  function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
  function newVoteId() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  async function getState() {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch(api + '/state', { cache: 'no-store' });
        if (r.ok) return await r.json();
        if (r.status >= 400 && r.status < 500) { fail('This link is not valid. Please ask for your link again.'); return null; }
      } catch (e) { /* server unreachable: try again */ }
      $('status').textContent = 'Connecting to the server...';
      await sleep(Math.min(5000, 500 * (attempt + 1)));
    }
  }

  async function sendVote(vote) {
    localStorage.setItem(pendingKey, JSON.stringify(vote));
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch(api + '/vote', {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(vote) });
        if (r.ok) { localStorage.removeItem(pendingKey); $('status').textContent = ''; return await r.json(); }
        if (r.status >= 400 && r.status < 500) {
          // e.g. the trial was answered in another tab: continue from the server's state
          localStorage.removeItem(pendingKey);
          return await getState();
        }
      } catch (e) { /* not acknowledged: resend */ }
      $('status').textContent = 'Saving your answer...';
      await sleep(Math.min(5000, 500 * (attempt + 1)));
    }
  }

  // the LR image is shown as large as its column allows (up- or downscaled, aspect kept); the box scales with it
  function sizeLR() {
    if (!state || !state.trial) return;
    const [w, h] = state.trial.lr_size;
    const tall = innerHeight > innerWidth;
    const s = Math.min((tall ? 0.92 : 0.30) * innerWidth / w, (tall ? 0.32 : 0.78) * innerHeight / h);
    $('lr').style.width = (w * s) + 'px';
    $('lr').style.height = (h * s) + 'px';
  }
  addEventListener('resize', sizeLR);

  function render() {
    if (!state) return;
    if (!state.trial) { show('done'); return; }
    show('trial');
    const t = state.trial;
    $('progress').textContent = (state.done + 1) + ' / ' + state.total;
    for (const side of ['left', 'right']) $(side).classList.remove('chosen');
    sizeLR();
    const box = $('box');
    box.style.left = (100 * t.box[0]) + '%';
    box.style.top = (100 * t.box[1]) + '%';
    box.style.width = (100 * t.box[2]) + '%';
    box.style.height = (100 * t.box[3]) + '%';
    const imgs = [[$('lr'), t.lr], [$('left-img'), t.left], [$('right-img'), t.right]];
    ready = false;
    document.body.classList.add('waiting');
    let left = imgs.length;
    const index = t.index;
    for (const [img, src] of imgs) {
      const loaded = () => {
        if (state.trial && state.trial.index === index && --left === 0) {
          ready = true; shownAt = performance.now(); document.body.classList.remove('waiting');
          document.body.dataset.trial = String(index);  // "this trial is on screen and answerable"
        }
      };
      img.onload = loaded;
      img.onerror = () => { $('status').textContent = 'An image failed to load; reload the page.'; };
      img.src = src;
      if (img.complete && img.naturalWidth) { img.onload = null; loaded(); }
    }
  }

  async function answer(side) {
    if (!ready || !started) return;
    ready = false;
    delete document.body.dataset.trial;
    $(side).classList.add('chosen');
    const vote = { trial: state.trial.index, answer: side,
                   response_ms: Math.round(performance.now() - shownAt), vote_id: newVoteId() };
    const next = await sendVote(vote);
    if (next) { state = next; render(); }
  }

  function start() {
    if (started || !state) return;
    started = true;
    render();
  }

  document.addEventListener('keydown', (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    if (!started) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); start(); } return; }
    if (e.key === 'ArrowLeft' || e.key === '1') { e.preventDefault(); answer('left'); }
    else if (e.key === 'ArrowRight' || e.key === '2') { e.preventDefault(); answer('right'); }
  });
  $('left').addEventListener('click', () => answer('left'));
  $('right').addEventListener('click', () => answer('right'));
  $('start').addEventListener('click', start);

  (async function init() {
    const pending = localStorage.getItem(pendingKey);
    state = await getState();
    if (!state) return;
    if (pending) {
      const vote = JSON.parse(pending);
      if (vote.trial === state.done) { const s = await sendVote(vote); if (s) state = s; }
      else localStorage.removeItem(pendingKey);
    }
    if (!state.trial) { show('done'); return; }
    if (state.done > 0) {
      $('resume-note').hidden = false;
      $('resume-note').textContent = 'Welcome back: you have answered ' + state.done + ' of ' + state.total +
        '. You continue where you stopped.';
      $('start').textContent = 'Continue';
    }
    show('intro');
    $('start').focus();
  })();
})();

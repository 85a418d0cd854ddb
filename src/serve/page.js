(() => {
  let current = null;
  const log = document.getElementById('log');
  const text = document.getElementById('text');
  const go = document.getElementById('go');
  const title = document.getElementById('chat-title');
  const seen = new Set();
  function show(m) {
    if (m.agent !== current || seen.has(m.id)) return;
    seen.add(m.id);
    const d = document.createElement('div');
    d.className = 'msg ' + m.role;
    d.dataset.role = m.role;
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = m.role === 'user' ? (m.from || 'you') : m.role === 'agent' ? m.agent : 'fleet';
    d.appendChild(who);
    d.appendChild(document.createTextNode(m.text + (m.text_bytes ? ' … (cut: ' + m.text_bytes + ' bytes in all)' : '')));
    log.appendChild(d);
    log.scrollTop = log.scrollHeight;
  }
  async function open(agent) {
    current = agent;
    seen.clear();
    document.querySelectorAll('.agent').forEach(b => b.classList.toggle('active', b.dataset.agent === agent));
    title.textContent = 'Chat with ' + agent;
    log.innerHTML = '';
    text.disabled = false; go.disabled = false; text.focus();
    const r = await fetch('/v1/agents/' + encodeURIComponent(agent) + '/messages?limit=1000');
    if (r.ok) (await r.json()).messages.forEach(show);
  }
  document.querySelectorAll('.agent').forEach(b => b.addEventListener('click', () => open(b.dataset.agent)));
  document.getElementById('send').addEventListener('submit', async e => {
    e.preventDefault();
    const t = text.value.trim();
    if (!t || !current) return;
    text.value = '';
    const r = await fetch('/v1/agents/' + encodeURIComponent(current) + '/messages', {
      method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify({text: t})
    });
    if (!r.ok) {
      const err = await r.json().catch(() => ({error: {message: r.statusText}}));
      show({id: 'err' + Date.now(), agent: current, role: 'system', text: err.error.message});
    }
  });
  const es = new EventSource('/v1/events');
  es.addEventListener('message', e => {
    const m = JSON.parse(e.data);
    show(m);
    const card = document.querySelector('.agent[data-agent="' + CSS.escape(m.agent) + '"]');
    if (card) {
      card.querySelector('[data-last]').textContent = m.text;
      card.querySelector('[data-when]').textContent = m.created_at;
    }
  });
})();

// Sign out: the session ends at the daemon, not only in this browser.
document.getElementById('signout').addEventListener('click', async () => {
  await fetch('/logout', {method: 'POST', headers: {'content-type': 'application/json'}, body: '{}', credentials: 'same-origin'});
  location.replace('/login');
});

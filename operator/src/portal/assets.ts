// The pages' script and style, served from /static (the Content-Security-Policy allows scripts and
// styles from the portal itself only). Kept as strings so the compiled build carries them.

export const PORTAL_JS = `'use strict';
(function () {
  var main = document.querySelector('main[data-base]');
  if (!main) return;
  var base = main.getAttribute('data-base');
  var field = function (name) { return main.querySelector('[data-field="' + name + '"]'); };
  var say = function (message) { var out = field('action-result'); if (out) out.textContent = message; };
  var post = function (action) {
    return fetch(base + '/' + action, { method: 'POST', headers: { 'x-codebrowse-page': '1' }, credentials: 'omit' })
      .then(function (res) { return res.json().then(function (body) { if (!res.ok) throw new Error(body.error || res.statusText); return body; }); });
  };
  var left = function (expiresAt) {
    var ms = Date.parse(expiresAt) - Date.now();
    if (!(ms > 0)) return 'ended';
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h > 0 ? h + ' h ' + String(m).padStart(2, '0') + ' min' : m + ' min ' + String(s % 60).padStart(2, '0') + ' s';
  };
  var tick = function () {
    var expiresAt = main.getAttribute('data-expires-at');
    var out = field('time-left-value');
    if (expiresAt && out) out.textContent = left(expiresAt);
  };
  setInterval(tick, 1000);
  var refresh = function () {
    fetch(base + '/status.json', { credentials: 'omit' }).then(function (res) {
      if (res.status === 404) { location.reload(); return; }
      return res.json().then(function (s) {
        // A test run that has just ended: show its result and output.
        if (main.getAttribute('data-mode') === 'Run' && s.phase !== main.getAttribute('data-phase') &&
            (s.phase === 'Completed' || s.phase === 'Failed')) { location.reload(); return; }
        if (s.expiresAt) {
          main.setAttribute('data-expires-at', s.expiresAt);
          var at = field('expires-at');
          if (at) { at.textContent = s.expiresAt; at.setAttribute('datetime', s.expiresAt); }
        }
        var phase = field('phase');
        if (phase && s.phase) phase.textContent = s.phase;
        tick();
      });
    }).catch(function () {});
  };
  setInterval(refresh, 5000);
  main.addEventListener('click', function (event) {
    var button = event.target.closest('button[data-action]');
    if (!button) return;
    var action = button.getAttribute('data-action');
    if (action === 'copy') {
      var textToCopy = button.getAttribute('data-copy');
      (navigator.clipboard ? navigator.clipboard.writeText(textToCopy) : Promise.reject(new Error('no clipboard')))
        .then(function () { button.textContent = 'Copied'; }, function () { say('Select the command and copy it.'); });
    } else if (action === 'reveal') {
      post('password').then(function (body) { field('password').textContent = body.password; button.remove(); }, function (e) { say(e.message); });
    } else if (action === 'archive') {
      post('archive').then(function (body) { say('Archiving as ' + body.archive + ': it is listed here once it is ready.'); button.remove(); }, function (e) { say(e.message); });
    } else if (action === 'restore') {
      post('restore/' + encodeURIComponent(button.getAttribute('data-archive'))).then(function (body) { say('Session ' + body.session + ' starts from the archive; its link is mailed to you.'); }, function (e) { say(e.message); });
    } else if (action === 'extend') {
      post('extend').then(function (body) { say('Extended: the booking is now ' + body.duration + '.'); refresh(); }, function (e) { say(e.message); });
    } else if (action === 'end') {
      if (button.getAttribute('data-armed') !== '1') {
        button.setAttribute('data-armed', '1');
        button.textContent = 'Click again to end it: the machine is deleted';
        return;
      }
      post('end').then(function () { say('The session is ending: its machine, address and name are released.'); button.disabled = true; }, function (e) { say(e.message); });
    }
  });
})();
`;

export const PORTAL_CSS = `body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #1b1f23; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 1.5rem; }
table.facts th { text-align: left; padding-right: 1.5rem; font-weight: 600; }
table.cache { border-collapse: collapse; width: 100%; } table.cache td, table.cache th { border-bottom: 1px solid #ddd; padding: .25rem .5rem; text-align: left; }
td.url, td.ranked-url, .package-url { word-break: break-all; }
.error { color: #b42318; }
code { background: #f3f4f6; padding: .1rem .3rem; border-radius: 3px; }
pre.package-output { background: #f3f4f6; padding: .5rem; max-height: 12rem; overflow: auto; white-space: pre-wrap; word-break: break-all; }
.package.failed .package-result { color: #b42318; } .package.installed .package-result { color: #067647; }
.muted { color: #667085; } button { margin-left: .25rem; }
main.console { max-width: none; } #screen { width: 100%; height: 75vh; background: #111; }
`;

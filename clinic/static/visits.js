/* The visit room: new messages and status changes arrive by polling a small JSON endpoint. */
(function () {
  'use strict';
  var list = document.getElementById('messages');
  if (!list) { return; }
  var url = list.getAttribute('data-live');
  var count = parseInt(list.getAttribute('data-count'), 10) || 0;
  var status = list.getAttribute('data-status');
  var closed = ['completed', 'referred', 'cancelled'];
  var notice = document.getElementById('live-notice');
  var form = document.getElementById('send');
  var text = form ? form.querySelector('textarea') : null;
  var file = form ? form.querySelector('input[type=file]') : null;
  var attached = document.getElementById('attached');
  var delay = 4000;
  var timer = null;

  function toBottom() { list.scrollTop = list.scrollHeight; }
  toBottom();
  if (window.location.hash === '#send' && text) { text.focus(); }

  if (file && attached) {
    file.addEventListener('change', function () {
      attached.textContent = file.files.length ? file.files[0].name : '';
      attached.hidden = !file.files.length;
    });
  }
  if (form) {
    form.addEventListener('submit', function () {
      var button = form.querySelector('button[type=submit]');
      if (button) { button.disabled = true; }
    });
  }

  function busy() {
    return (text && text.value.trim() !== '') || (file && file.files.length > 0) ||
      document.querySelector('#finish textarea, #refer textarea') &&
      Array.prototype.some.call(document.querySelectorAll('#finish textarea, #refer textarea'),
                                function (t) { return t.value.trim() !== ''; });
  }

  function schedule() { timer = window.setTimeout(poll, document.hidden ? delay * 3 : delay); }

  function poll() {
    fetch(url, {credentials: 'same-origin', headers: {'Accept': 'application/json'}, cache: 'no-store'})
      .then(function (resp) {
        if (!resp.ok || (resp.headers.get('Content-Type') || '').indexOf('json') < 0) { throw new Error('poll'); }
        return resp.json();
      })
      .then(function (data) {
        if (data.count !== count) {
          var atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
          list.innerHTML = data.html;
          count = data.count;
          if (atBottom) { toBottom(); }
        }
        var queue = document.getElementById('queue-position');
        if (queue && data.queue_position && String(data.queue_position) !== queue.getAttribute('data-position')) {
          queue.setAttribute('data-position', String(data.queue_position));
          queue.textContent = queue.textContent.replace(/\d+/, String(data.queue_position));
        }
        if (data.status !== status) {
          status = data.status;
          if (busy()) { notice.hidden = false; } else { window.location.reload(); return; }
        }
        if (closed.indexOf(status) < 0) { schedule(); }
      })
      .catch(function () { delay = Math.min(delay * 2, 30000); schedule(); });
  }
  if (closed.indexOf(status) < 0) { schedule(); }
})();

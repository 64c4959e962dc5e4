/* The physician's workstation home: the counts and lists refresh by polling a small JSON
   endpoint (like the visit room); the face check's freshness counts down on the page. */
(function () {
  'use strict';
  var panels = document.getElementById('panels');
  if (!panels) { return; }
  var url = panels.getAttribute('data-live');
  var sig = panels.getAttribute('data-sig');
  var delay = 8000;
  var face = document.getElementById('face-freshness');
  var faceText = document.getElementById('face-text');
  var until = parseInt(face.getAttribute('data-until'), 10) || 0;
  var skew = (parseInt(face.getAttribute('data-now'), 10) || 0) - Math.floor(Date.now() / 1000);

  function showFace() {
    var left = Math.floor((until - (Math.floor(Date.now() / 1000) + skew)) / 60);
    if (until && left >= 1) {
      faceText.textContent = face.getAttribute('data-fresh').replace('%(n)s', String(left));
      faceText.className = 'verdict ok';
    } else {
      faceText.textContent = face.getAttribute('data-stale');
      faceText.className = 'verdict bad';
    }
  }

  function schedule() { window.setTimeout(poll, document.hidden ? delay * 3 : delay); }

  function poll() {
    fetch(url, {credentials: 'same-origin', headers: {'Accept': 'application/json'}, cache: 'no-store'})
      .then(function (resp) {
        if (!resp.ok || (resp.headers.get('Content-Type') || '').indexOf('json') < 0) { throw new Error('poll'); }
        return resp.json();
      })
      .then(function (data) {
        if (data.sig !== sig) { panels.innerHTML = data.html; sig = data.sig; }
        if (data.face_until) { until = data.face_until; }
        showFace();
        delay = 8000;
        schedule();
      })
      .catch(function () { delay = Math.min(delay * 2, 60000); schedule(); });
  }
  window.setInterval(showFace, 15000);
  schedule();
})();

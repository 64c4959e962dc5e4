/* Video in the visit room: the Twilio Video SDK (served by this app from its npm install,
   never from a CDN) joins the visit's room with a token the server gives participants only. */
(function () {
  'use strict';
  var box = document.getElementById('video');
  if (!box) { return; }
  var tokenUrl = box.getAttribute('data-token-url');
  var join = document.getElementById('video-join');
  var leave = document.getElementById('video-leave');
  var cam = document.getElementById('video-camera');
  var mic = document.getElementById('video-mic');
  var state = document.getElementById('video-state');
  var local = document.getElementById('video-local');
  var remote = document.getElementById('video-remote');
  var room = null;
  var camOn = true;
  var micOn = true;

  function say(key) { state.textContent = box.getAttribute('data-say-' + key) || ''; state.setAttribute('data-state', key); }
  function show(el, on) { el.hidden = !on; }

  function attach(track, where) {
    if (track.kind === 'video' || track.kind === 'audio') { where.appendChild(track.attach()); }
  }
  function detach(track) { track.detach().forEach(function (el) { el.remove(); }); }

  function participant(p) {
    p.tracks.forEach(function (pub) { if (pub.track) { attach(pub.track, remote); } });
    p.on('trackSubscribed', function (t) { attach(t, remote); });
    p.on('trackUnsubscribed', detach);
  }

  function ended() {
    room = null;
    local.innerHTML = '';
    remote.innerHTML = '';
    show(join, true); show(leave, false); show(cam, false); show(mic, false);
    say('left');
  }

  join.addEventListener('click', function () {
    if (!window.Twilio || !window.Twilio.Video) { say('unavailable'); return; }
    say('connecting');
    join.disabled = true;
    fetch(tokenUrl, {credentials: 'same-origin', headers: {'Accept': 'application/json'}, cache: 'no-store'})
      .then(function (r) { if (!r.ok) { throw new Error('token'); } return r.json(); })
      .then(function (grant) {
        box.setAttribute('data-room', grant.room);
        return window.Twilio.Video.connect(grant.token, {name: grant.room, audio: true, video: {width: 640}});
      })
      .then(function (r) {
        room = r;
        say('connected');
        show(join, false); show(leave, true); show(cam, true); show(mic, true);
        r.localParticipant.tracks.forEach(function (pub) { if (pub.track && pub.track.kind === 'video') { attach(pub.track, local); } });
        r.participants.forEach(participant);
        r.on('participantConnected', participant);
        r.on('participantDisconnected', function (p) { p.tracks.forEach(function (pub) { if (pub.track) { detach(pub.track); } }); });
        r.on('disconnected', ended);
      })
      .catch(function () { say('failed'); })
      .then(function () { join.disabled = false; });
  });

  leave.addEventListener('click', function () { if (room) { room.disconnect(); } });

  function toggle(kind, on) {
    if (!room) { return; }
    var pubs = kind === 'video' ? room.localParticipant.videoTracks : room.localParticipant.audioTracks;
    pubs.forEach(function (pub) { if (on) { pub.track.enable(); } else { pub.track.disable(); } });
  }
  cam.addEventListener('click', function () {
    camOn = !camOn; toggle('video', camOn);
    cam.setAttribute('aria-pressed', camOn ? 'false' : 'true');
    cam.textContent = box.getAttribute(camOn ? 'data-say-cam-off' : 'data-say-cam-on');
  });
  mic.addEventListener('click', function () {
    micOn = !micOn; toggle('audio', micOn);
    mic.setAttribute('aria-pressed', micOn ? 'false' : 'true');
    mic.textContent = box.getAttribute(micOn ? 'data-say-mic-off' : 'data-say-mic-on');
  });
  window.addEventListener('beforeunload', function () { if (room) { room.disconnect(); } });
})();

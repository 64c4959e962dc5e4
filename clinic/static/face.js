// The physician's face check (identity/templates/identity/face.html): camera capture with
// getUserMedia, sent with the form's CSRF token; texts come from the section's data-* attributes.
(function () {
  var section = document.getElementById('face-check');
  var form = document.getElementById('face-form');
  if (!section || !form) { return; }
  var video = document.getElementById('face-video');
  var canvas = document.getElementById('face-canvas');
  var status = document.getElementById('camera-status');
  var button = document.getElementById('face-capture');
  var messages = {
    noCamera: section.dataset.noCamera,
    sending: section.dataset.sending,
    failed: section.dataset.failed
  };
  function send(blob) {
    var data = new FormData();
    data.append('csrf_token', form.querySelector('[name=csrf_token]').value);
    data.append('image', blob, 'capture.jpg');
    status.textContent = messages.sending;
    button.disabled = true;
    fetch(form.action, {method: 'POST', body: data, credentials: 'same-origin',
                        headers: {'Accept': 'application/json'}})
      .then(function (resp) { return resp.json().then(function (body) { return [resp, body]; }); })
      .then(function (pair) {
        var body = pair[1];
        if (pair[0].ok && body.redirect) { window.location.assign(body.redirect); return; }
        status.textContent = (body.error && body.error.message) || messages.failed;
        status.className = 'flash error';
        button.disabled = false;
      })
      .catch(function () { status.textContent = messages.failed; button.disabled = false; });
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    status.textContent = messages.noCamera;
    return;
  }
  navigator.mediaDevices.getUserMedia({video: {facingMode: 'user', width: {ideal: 1280}, height: {ideal: 720}}, audio: false})
    .then(function (stream) {
      video.srcObject = stream;
      document.getElementById('camera').hidden = false;
      button.addEventListener('click', function () {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        canvas.getContext('2d').drawImage(video, 0, 0, canvas.width, canvas.height);
        canvas.toBlob(send, 'image/jpeg', 0.92);
      });
    })
    .catch(function () { status.textContent = messages.noCamera; });
})();

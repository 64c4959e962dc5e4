// A running formulary import (prescriptions/import_run.html): poll its progress, reload when done.
(function () {
  var run = document.getElementById("run");
  if (!run || run.dataset.state !== "running") { return; }
  var bar = document.getElementById("import-progress");
  var count = document.getElementById("import-count");
  function poll() {
    fetch(run.dataset.progress, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        if (data.state !== "running") { window.location.reload(); return; }
        bar.max = data.total || 1;
        bar.value = data.done;
        count.textContent = data.done + " / " + (data.total || "…");
        setTimeout(poll, 1000);
      })
      .catch(function () { setTimeout(poll, 1000); });
  }
  setTimeout(poll, 1000);
})();

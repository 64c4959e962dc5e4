/* The diagnosis upload form: the patient types the condition's Chinese name (高血压 …) and
   picks it from a list the clinic's condition catalog fills as they type (a JSON search);
   the chips below the field fill it in with one tap. No inline script: the page's CSP
   allows scripts from the clinic's own static files only. */
(function () {
  "use strict";
  var form = document.getElementById("diagnosis-form");
  if (!form) return;
  var input = form.querySelector("input[list='condition-list']");
  var list = document.getElementById("condition-list");
  var url = form.dataset.search;
  var timer = null, seq = 0;
  if (!input || !list || !url) return;

  function fill(items) {
    list.innerHTML = "";
    items.forEach(function (c) {
      var opt = document.createElement("option");
      opt.value = c.name;
      list.appendChild(opt);
    });
  }

  function search() {
    var term = input.value.trim();
    var mine = ++seq;
    fetch(url + "?q=" + encodeURIComponent(term), {
      headers: { Accept: "application/json" }, credentials: "same-origin"
    }).then(function (r) { return r.ok ? r.json() : { items: [] }; })
      .then(function (data) { if (mine === seq) fill(data.items || []); })
      .catch(function () { /* the server resolves the name on submit anyway */ });
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(search, 200);
  });
  document.querySelectorAll("#condition-chips .chip").forEach(function (chip) {
    chip.addEventListener("click", function () {
      input.value = chip.getAttribute("data-name");
      var details = chip.closest("details");
      if (details) details.open = false;
      input.focus();
    });
  });
})();

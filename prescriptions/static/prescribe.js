/* The prescribing page: catalog search, items added and removed in place, and every
   rule's verdict re-checked (debounced) as the form changes. Without JavaScript the
   same form works by posting (search, add, remove, check, sign). */
(function () {
  "use strict";
  var form = document.getElementById("rx-form");
  if (!form) return;
  var csrf = form.querySelector('input[name="csrf_token"]').value;
  var items = document.getElementById("items");
  var results = document.getElementById("results");
  var q = document.getElementById("q");
  var max = parseInt(form.dataset.max, 10) || 5;
  var checkTimer = null, searchTimer = null, seq = 0;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function nextRow() {
    var n = 0;
    items.querySelectorAll("li.item").forEach(function (li) {
      n = Math.max(n, parseInt(li.dataset.row, 10) + 1);
    });
    return n;
  }

  function renumberHint() {
    document.getElementById("no-items").hidden = items.querySelectorAll("li.item").length > 0;
  }

  function addRow(row) {
    if (items.querySelectorAll("li.item").length >= max) {
      scheduleCheck(0);
      return;
    }
    var n = String(nextRow());
    var html = document.getElementById("item-template").innerHTML.split("__N__").join(n);
    var holder = document.createElement("ol");
    holder.innerHTML = html;
    var li = holder.firstElementChild;
    Object.keys(row).forEach(function (key) {
      var input = li.querySelector('[name="items-' + n + "-" + key + '"]');
      if (input) input.value = row[key];
    });
    li.querySelector(".drug-name").textContent = row.name;
    items.appendChild(li);
    renumberHint();
    scheduleCheck(0);
  }

  function showResults(list) {
    results.innerHTML = "";
    if (!list.length) {
      results.appendChild(el("li", "muted", results.dataset.none || "—"));
      return;
    }
    list.forEach(function (d) {
      var li = el("li", "result");
      li.dataset.id = d.id;
      var span = el("span");
      span.appendChild(el("strong", "", d.name));
      span.appendChild(document.createTextNode(" " + d.strength + " "));
      span.appendChild(el("span", "muted", [d.form, d.route, d.generic_name_en].filter(Boolean).join(" · ")));
      if (d.control_label) span.appendChild(el("span", "badge rejected", d.control_label));
      li.appendChild(span);
      var b = el("button", "small add", form.dataset.addLabel || "+");
      b.type = "button";
      b.addEventListener("click", function () { addRow(d.row); });
      li.appendChild(b);
      results.appendChild(li);
    });
  }

  function search() {
    var term = q.value.trim();
    if (!term) { results.innerHTML = ""; return; }
    fetch(form.dataset.search + "?q=" + encodeURIComponent(term), {
      headers: { Accept: "application/json" }, credentials: "same-origin"
    }).then(function (r) { return r.ok ? r.json() : { items: [] }; })
      .then(function (data) { if (q.value.trim() === term) showResults(data.items); });
  }

  function render(data) {
    var ul = document.getElementById("violations");
    var errs = document.getElementById("field-errors");
    ul.innerHTML = "";
    errs.innerHTML = "";
    items.querySelectorAll("li.item").forEach(function (li) { li.classList.remove("broken"); });
    var rows = items.querySelectorAll("li.item");
    data.violations.forEach(function (v) {
      var li = el("li", "violation");
      li.dataset.code = v.code;
      li.appendChild(el("strong", "", v.title || ""));
      if (v.item !== null && v.item !== undefined) {
        li.dataset.item = v.item;
        li.appendChild(document.createTextNode(" "));
        li.appendChild(el("span", "muted", "#" + (v.item + 1)));
        if (rows[v.item]) rows[v.item].classList.add("broken");
      }
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", "text", v.message));
      ul.appendChild(li);
    });
    (data.references || []).forEach(function (ref, n) {
      var p = rows[n] && rows[n].querySelector(".dosing-reference");
      if (!p) return;
      p.textContent = ref ? [ref.adult, ref.child, ref.frequencies, ref.unit, ref.pack].join("；") : "";
    });
    form.querySelectorAll('[aria-invalid="true"]').forEach(function (i) { i.removeAttribute("aria-invalid"); });
    Object.keys(data.errors).forEach(function (name) {
      errs.appendChild(el("li", "field-error", data.errors[name]));
      var input = form.querySelector('[name="' + name + '"]');
      if (input) input.setAttribute("aria-invalid", "true");
    });
    var old = document.getElementById("items-error");
    if (old) old.remove();
    document.getElementById("rules-ok").hidden = !data.ok;
    document.getElementById("rules").dataset.checked = String(++seq);
  }

  function check() {
    var body = new FormData(form);
    body.delete("action");
    fetch(form.dataset.check, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, Accept: "application/json" }
    }).then(function (r) {
      if (r.redirected || !r.ok) { throw new Error(String(r.status)); }
      return r.json();
    }).then(render).catch(function () { /* the server-side check still runs on sign */ });
  }

  function scheduleCheck(delay) {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(check, delay === undefined ? 400 : delay);
  }

  form.addEventListener("input", function (e) {
    if (e.target === q) {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(search, 300);
      return;
    }
    scheduleCheck();
  });
  form.addEventListener("change", function (e) { if (e.target !== q) scheduleCheck(); });
  q.addEventListener("keydown", function (e) {
    if (e.key === "Enter") { e.preventDefault(); clearTimeout(searchTimer); search(); }
  });
  form.addEventListener("click", function (e) {
    var t = e.target;
    if (t.matches("button.remove")) {
      e.preventDefault();
      t.closest("li.item").remove();
      renumberHint();
      scheduleCheck(0);
    } else if (t.matches("#search-button")) {
      e.preventDefault();
      search();
    }
  });
})();

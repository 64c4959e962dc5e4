/* The address picker: province → city → district from the official division codes. */
(function () {
  'use strict';
  var box = document.getElementById('region-picker');
  if (!box) { return; }
  var url = box.getAttribute('data-url');
  var province = document.getElementById('province');
  var city = document.getElementById('city');
  var district = document.getElementById('district');

  function fill(select, items) {
    var first = select.options[0];
    select.innerHTML = '';
    select.appendChild(first);
    items.forEach(function (it) {
      var o = document.createElement('option');
      o.value = it.code;
      o.textContent = it.name;
      select.appendChild(o);
    });
    if (items.length === 1) { select.value = items[0].code; }
  }

  function load(parent, select, then) {
    fill(select, []);
    if (!parent) { return; }
    var level = select === district ? 'district' : 'city';
    fetch(url + '?level=' + level + '&parent=' + encodeURIComponent(parent), {credentials: 'same-origin'})
      .then(function (r) { return r.json(); })
      .then(function (data) { fill(select, data.items); if (then) { then(); } });
  }

  province.addEventListener('change', function () {
    fill(district, []);
    load(province.value, city, function () { if (city.value) { load(city.value, district); } });
  });
  city.addEventListener('change', function () { load(city.value, district); });
})();

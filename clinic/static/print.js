/* A "print" button: any element with data-print prints the page (print CSS hides the rest). */
(function () {
  'use strict';
  Array.prototype.forEach.call(document.querySelectorAll('[data-print]'), function (el) {
    el.addEventListener('click', function () { window.print(); });
  });
})();

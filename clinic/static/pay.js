// Paying a visit with Stripe Elements (visits/pay.html); the key, client secret, locale and
// return address come from the form's data-* attributes.
(function () {
  var form = document.getElementById('payment-form');
  if (!form || typeof Stripe === 'undefined') { return; }
  var stripe = Stripe(form.dataset.publishableKey, {locale: form.dataset.locale});
  var elements = stripe.elements({clientSecret: form.dataset.clientSecret});
  elements.create('payment').mount('#payment-element');
  var error = document.getElementById('payment-error');
  var button = document.getElementById('pay-submit');
  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    button.disabled = true;
    stripe.confirmPayment({elements: elements, confirmParams: {return_url: form.dataset.returnUrl}})
      .then(function (result) {
        if (result.error) { error.textContent = result.error.message; error.hidden = false; button.disabled = false; }
      });
  });
})();

"use strict";
/* Swagger UI over this bridge's /openapi.json; the page's token (session storage) is sent along. */
(function () {
  const TOKEN_KEY = "expertd.token";
  const token = () => window.sessionStorage.getItem(TOKEN_KEY);
  window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: true,
    requestInterceptor: (req) => {
      const t = token();
      if (t && !req.headers.Authorization) req.headers.Authorization = `Bearer ${t}`;
      return req;
    },
  });
})();

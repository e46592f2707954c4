/*
 * ngx_http_ratelimit_module: libratelimit inside nginx.
 *
 *   ratelimit_zone NAME "CONFIG";            (http)
 *   ratelimit zone=NAME key=VALUE [cost=VALUE];
 *   ratelimit_status CODE;                   (default 429)
 *   ratelimit_headers legacy|ietf|both|off;  (default legacy)
 *   ratelimit_dry_run on|off;                (default off)
 *   ratelimit_log_level info|notice|warn|error;  (default error)
 *
 * A zone is one limiter, made by rl_create(CONFIG) in the master while the
 * configuration is read, so that every worker inherits it: a
 * `backend=shm` region is shared by the workers (a worker killed by
 * SIGKILL holds no lock for good: the library's robust locks), a
 * `backend=redis` zone by every nginx host using that Redis, and a
 * `backend=memory` zone counts in each worker alone.
 *
 * A request is checked once, in the preaccess phase (as limit_req is), on
 * every `ratelimit` line of its location: all must allow it. The lines are
 * checked in order; when one denies, the units the ones before it took are
 * given back (rl_adjust with the negated cost), so a denied request spends
 * nothing in any zone. A line whose key is empty is not accounted.
 *
 * memory and shm checks take nanoseconds and are made on the worker's event
 * loop. A location with a redis zone has all its checks made on a thread of
 * nginx's thread pool "default" (`thread_pool default threads=32
 * max_queue=65536;` unless configured), while the request waits, blocked
 * (as for `aio threads`): a slow or unreachable Redis delays only the
 * requests that wait on it, for at most the zone's timeout_ms, after which
 * its on_error setting applies. The event loop never waits on Redis.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <sys/mman.h>

#include <ratelimit.h>


#define NGX_HTTP_RATELIMIT_ERROR_LEN  256
#define NGX_HTTP_RATELIMIT_KEY_SHOWN  128


typedef struct {
    ngx_str_t                    name;
    char                        *shm_name;    /* backend=shm: name=, or NULL */
    rl_limiter                  *lim;
    /* From rl_describe(): where its state is and what a failure means. */
    unsigned                     redis:1;
    unsigned                     memory:1;
    unsigned                     deny_on_error:1;
} ngx_http_ratelimit_zone_t;


typedef struct {
    ngx_array_t                  zones;       /* ngx_http_ratelimit_zone_t * */
#if (NGX_THREADS)
    ngx_thread_pool_t           *pool;
#endif
} ngx_http_ratelimit_main_conf_t;


typedef struct {
    ngx_http_ratelimit_zone_t   *zone;
    ngx_http_complex_value_t     key;
    ngx_http_complex_value_t    *cost;        /* NULL: a cost of 1 */
} ngx_http_ratelimit_limit_t;


typedef struct {
    ngx_array_t                 *limits;      /* ngx_http_ratelimit_limit_t */
    ngx_uint_t                   status;
    ngx_uint_t                   headers;     /* RL_HEADERS_* flags; 0: off */
    ngx_flag_t                   dry_run;
    ngx_uint_t                   log_level;
    unsigned                     redis:1;     /* a zone of `limits` is redis */
} ngx_http_ratelimit_loc_conf_t;


/* One `ratelimit` line of a request: its inputs, then its outcome. */
typedef struct {
    ngx_http_ratelimit_zone_t   *zone;
    ngx_str_t                    key;
    uint64_t                     cost;
    int                          status;      /* rl_check()'s */
    int                          refund;      /* rl_adjust()'s, if made */
    unsigned                     checked:1;
    unsigned                     refunded:1;  /* rl_adjust() was called */
    rl_decision                  decision;
    char                         error[NGX_HTTP_RATELIMIT_ERROR_LEN];
} ngx_http_ratelimit_check_t;


#define NGX_HTTP_RATELIMIT_NEW      0
#define NGX_HTTP_RATELIMIT_WAITING  1         /* on a thread */
#define NGX_HTTP_RATELIMIT_DECIDED  2
#define NGX_HTTP_RATELIMIT_ANSWERED 3


typedef struct {
    ngx_uint_t                   state;
    ngx_uint_t                   n;
    ngx_http_ratelimit_check_t  *checks;
    ngx_int_t                    denied;      /* index, or -1 */
} ngx_http_ratelimit_ctx_t;


static ngx_int_t ngx_http_ratelimit_handler(ngx_http_request_t *r);
static void ngx_http_ratelimit_run(ngx_http_ratelimit_ctx_t *ctx);
static ngx_int_t ngx_http_ratelimit_answer(ngx_http_request_t *r,
    ngx_http_ratelimit_loc_conf_t *lrcf, ngx_http_ratelimit_ctx_t *ctx);
static ngx_int_t ngx_http_ratelimit_add_headers(ngx_http_request_t *r,
    ngx_uint_t flags, const rl_decision *d);
static ngx_int_t ngx_http_ratelimit_send_denial(ngx_http_request_t *r,
    ngx_uint_t status, const rl_decision *d);
static ngx_http_ratelimit_ctx_t *ngx_http_ratelimit_get_ctx(
    ngx_http_request_t *r);
static void ngx_http_ratelimit_cleanup(void *data);
static void *ngx_http_ratelimit_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ratelimit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ratelimit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_ratelimit_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ratelimit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ratelimit_headers(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_ratelimit_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ratelimit_init_module(ngx_cycle_t *cycle);
#if (NGX_THREADS)
static void ngx_http_ratelimit_thread(void *data, ngx_log_t *log);
static void ngx_http_ratelimit_thread_done(ngx_event_t *ev);
#endif


static ngx_conf_enum_t  ngx_http_ratelimit_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_ratelimit_status_bounds = {
    ngx_conf_check_num_bounds, 400, 599
};


static ngx_command_t  ngx_http_ratelimit_commands[] = {

    { ngx_string("ratelimit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_ratelimit_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE23,
      ngx_http_ratelimit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, status),
      &ngx_http_ratelimit_status_bounds },

    { ngx_string("ratelimit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ratelimit_headers,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ratelimit_dry_run"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, dry_run),
      NULL },

    { ngx_string("ratelimit_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ratelimit_loc_conf_t, log_level),
      &ngx_http_ratelimit_log_levels },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ratelimit_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ratelimit_init,               /* postconfiguration */

    ngx_http_ratelimit_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ratelimit_create_loc_conf,    /* create location configuration */
    ngx_http_ratelimit_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_ratelimit_module = {
    NGX_MODULE_V1,
    &ngx_http_ratelimit_module_ctx,        /* module context */
    ngx_http_ratelimit_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_ratelimit_init_module,        /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* ---- the request ------------------------------------------------------ */

/* Parses a cost: a whole number, decimal digits only, at most 2^63 - 1. */
static ngx_int_t
ngx_http_ratelimit_parse_cost(ngx_str_t *s, uint64_t *out)
{
    size_t    i;
    uint64_t  v;

    if (s->len == 0 || s->len > 19) {
        return NGX_ERROR;
    }

    v = 0;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] < '0' || s->data[i] > '9') {
            return NGX_ERROR;
        }

        v = v * 10 + (uint64_t) (s->data[i] - '0');
    }

    if (v > (uint64_t) INT64_MAX) {
        return NGX_ERROR;
    }

    *out = v;
    return NGX_OK;
}


/*
 * Writes `src` for a log line: printable ASCII as is, but `"` and `\`
 * escaped; every other byte as \xHH; at most NGX_HTTP_RATELIMIT_KEY_SHOWN
 * bytes of the key, then "...". `dst` holds 4 * KEY_SHOWN + 4 bytes.
 */
static u_char *
ngx_http_ratelimit_escape(u_char *dst, ngx_str_t *src)
{
    size_t     i, n;
    u_char     c;
    static u_char  hex[] = "0123456789abcdef";

    n = ngx_min(src->len, NGX_HTTP_RATELIMIT_KEY_SHOWN);

    for (i = 0; i < n; i++) {
        c = src->data[i];

        if (c == '"' || c == '\\') {
            *dst++ = '\\';
            *dst++ = c;

        } else if (c >= 0x20 && c < 0x7f) {
            *dst++ = c;

        } else {
            *dst++ = '\\';
            *dst++ = 'x';
            *dst++ = hex[c >> 4];
            *dst++ = hex[c & 0xf];
        }
    }

    if (n < src->len) {
        dst = ngx_cpymem(dst, "...", 3);
    }

    return dst;
}


static ngx_int_t
ngx_http_ratelimit_handler(ngx_http_request_t *r)
{
    size_t                          i;
    ngx_str_t                       cost;
    ngx_uint_t                      n;
    ngx_http_ratelimit_ctx_t       *ctx;
    ngx_http_ratelimit_limit_t     *limits;
    ngx_http_ratelimit_check_t     *check;
    ngx_http_ratelimit_loc_conf_t  *lrcf;
#if (NGX_THREADS)
    ngx_thread_task_t                *task;
    ngx_http_ratelimit_main_conf_t   *rmcf;
#endif

    if (r != r->main) {
        return NGX_DECLINED;
    }

    lrcf = ngx_http_get_module_loc_conf(r, ngx_http_ratelimit_module);

    ctx = ngx_http_ratelimit_get_ctx(r);

    if (ctx != NULL) {
        switch (ctx->state) {

        case NGX_HTTP_RATELIMIT_WAITING:
            return NGX_AGAIN;

        case NGX_HTTP_RATELIMIT_DECIDED:
            ctx->state = NGX_HTTP_RATELIMIT_ANSWERED;
            return ngx_http_ratelimit_answer(r, lrcf, ctx);

        default:
            /* Checked already: an internal redirect is not checked again. */
            return NGX_DECLINED;
        }
    }

    if (lrcf->limits == NULL || lrcf->limits->nelts == 0) {
        return NGX_DECLINED;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ratelimit_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = lrcf->limits->nelts;
    ctx->checks = ngx_pcalloc(r->pool, n * sizeof(ngx_http_ratelimit_check_t));
    if (ctx->checks == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->n = n;
    ctx->denied = -1;
    limits = lrcf->limits->elts;

    for (i = 0; i < n; i++) {
        check = &ctx->checks[i];
        check->zone = limits[i].zone;

        if (ngx_http_complex_value(r, &limits[i].key, &check->key) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        check->cost = 1;

        if (limits[i].cost != NULL) {
            if (ngx_http_complex_value(r, limits[i].cost, &cost) != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            if (ngx_http_ratelimit_parse_cost(&cost, &check->cost) != NGX_OK) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "ratelimit zone \"%V\": cost \"%V\" is not "
                              "a whole number from 0 to 9223372036854775807",
                              &check->zone->name, &cost);
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }
    }

    /* The context outlives internal redirects (which clear r->ctx). */
    {
        ngx_pool_cleanup_t  *cln;

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_ratelimit_cleanup;
        cln->data = ctx;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_ratelimit_module);

#if (NGX_THREADS)
    if (lrcf->redis) {
        rmcf = ngx_http_get_module_main_conf(r, ngx_http_ratelimit_module);

        task = ngx_thread_task_alloc(r->pool,
                                     sizeof(ngx_http_ratelimit_ctx_t *));
        if (task == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        *(ngx_http_ratelimit_ctx_t **) task->ctx = ctx;
        task->handler = ngx_http_ratelimit_thread;
        task->event.data = r;
        task->event.handler = ngx_http_ratelimit_thread_done;

        if (ngx_thread_task_post(rmcf->pool, task) == NGX_OK) {
            ctx->state = NGX_HTTP_RATELIMIT_WAITING;
            r->main->blocked++;
            r->aio = 1;
            return NGX_AGAIN;
        }

        /*
         * The pool's queue is full: the checks cannot be made without
         * waiting on Redis here. Each zone's on_error decides, as for a
         * backend that did not answer.
         */
        for (i = 0; i < n; i++) {
            check = &ctx->checks[i];

            if (check->key.len == 0) {
                continue;
            }

            check->checked = 1;
            check->status = RL_ERR_BACKEND;
            ngx_cpystrn((u_char *) check->error,
                        (u_char *) "nginx's thread pool queue is full "
                        "(thread_pool max_queue)", sizeof(check->error));
            check->decision.allowed = check->zone->deny_on_error ? 0 : 1;
            check->decision.retry_after_ms = check->zone->deny_on_error
                                             ? 1000 : 0;

            if (!check->decision.allowed && ctx->denied < 0) {
                ctx->denied = i;
            }
        }

        ctx->state = NGX_HTTP_RATELIMIT_ANSWERED;
        return ngx_http_ratelimit_answer(r, lrcf, ctx);
    }
#endif

    ngx_http_ratelimit_run(ctx);

    ctx->state = NGX_HTTP_RATELIMIT_ANSWERED;
    return ngx_http_ratelimit_answer(r, lrcf, ctx);
}


/*
 * The checks of one request, in order, all or nothing. Calls only the
 * library (thread-safe): it runs on the event loop or on a pool thread.
 */
static void
ngx_http_ratelimit_run(ngx_http_ratelimit_ctx_t *ctx)
{
    int                          st;
    ngx_uint_t                   i, j;
    const char                  *msg;
    rl_decision                  undo;
    ngx_http_ratelimit_check_t  *c, *p;

    for (i = 0; i < ctx->n; i++) {
        c = &ctx->checks[i];

        if (c->key.len == 0) {
            continue;
        }

        st = rl_check(c->zone->lim, c->key.data, c->key.len, c->cost,
                      &c->decision);
        c->checked = 1;
        c->status = st;

        if (st != RL_OK) {
            msg = rl_last_error();
            ngx_cpystrn((u_char *) c->error, (u_char *) msg,
                        sizeof(c->error));
        }

        if (c->decision.allowed) {
            continue;
        }

        ctx->denied = i;

        /* Give back what the lines before took: the request is not served. */
        for (j = 0; j < i; j++) {
            p = &ctx->checks[j];

            if (p->checked && p->status == RL_OK && p->cost > 0
                && p->decision.allowed && p->decision.retry_after_ms == 0)
            {
                p->refunded = 1;
                p->refund = rl_adjust(p->zone->lim, p->key.data, p->key.len,
                                      -(int64_t) p->cost, &undo);

                /* Logged by ngx_http_ratelimit_answer (this may be a pool
                 * thread): the zone keeps the units. */
                if (p->refund != RL_OK) {
                    msg = rl_last_error();
                    ngx_cpystrn((u_char *) p->error, (u_char *) msg,
                                sizeof(p->error));
                }
            }
        }

        return;
    }
}


static ngx_int_t
ngx_http_ratelimit_answer(ngx_http_request_t *r,
    ngx_http_ratelimit_loc_conf_t *lrcf, ngx_http_ratelimit_ctx_t *ctx)
{
    u_char                       key[4 * NGX_HTTP_RATELIMIT_KEY_SHOWN + 4];
    u_char                      *last;
    ngx_uint_t                   i;
    ngx_int_t                    shown;
    rl_decision                  d;
    ngx_http_ratelimit_check_t  *c;

    shown = -1;

    for (i = 0; i < ctx->n; i++) {
        c = &ctx->checks[i];

        if (!c->checked) {
            continue;
        }

        if (c->status != RL_OK) {
            last = ngx_http_ratelimit_escape(key, &c->key);
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "ratelimit zone \"%V\", key \"%*s\": %s (%s), "
                          "%s by its on_error setting",
                          &c->zone->name, (size_t) (last - key), key,
                          c->error, rl_strerror(c->status),
                          c->decision.allowed ? "allowed" : "denied");
        }

        if (c->refunded && c->refund != RL_OK) {
            last = ngx_http_ratelimit_escape(key, &c->key);
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "ratelimit zone \"%V\", key \"%*s\": giving back "
                          "cost %uL after another zone's denial failed: "
                          "%s (%s); the zone keeps it",
                          &c->zone->name, (size_t) (last - key), key,
                          c->cost, c->error, rl_strerror(c->refund));
        }

        /* A dry-run zone's would-be denial (allowed, retry_after_ms > 0). */
        if (c->decision.allowed && c->decision.retry_after_ms > 0
            && c->status == RL_OK)
        {
            last = ngx_http_ratelimit_escape(key, &c->key);
            ngx_log_error(lrcf->log_level, r->connection->log, 0,
                          "limiting requests, dry run, by zone \"%V\", "
                          "key \"%*s\", cost %uL, retry after %uL ms",
                          &c->zone->name, (size_t) (last - key), key,
                          c->cost, c->decision.retry_after_ms);
        }

        /* Shown when served: the rate with the least remaining (a failed
         * check's decision, made up by on_error, tells nothing). */
        if (c->status == RL_OK
            && (shown < 0
                || c->decision.remaining
                   < ctx->checks[shown].decision.remaining))
        {
            shown = i;
        }
    }

    if (ctx->denied >= 0) {
        c = &ctx->checks[ctx->denied];
        shown = ctx->denied;
        last = ngx_http_ratelimit_escape(key, &c->key);

        if (c->decision.retry_after_ms == UINT64_MAX) {
            ngx_log_error(lrcf->log_level, r->connection->log, 0,
                          "limiting requests%s by zone \"%V\", key \"%*s\", "
                          "cost %uL is above the quota %uL",
                          lrcf->dry_run ? ", dry run," : "",
                          &c->zone->name, (size_t) (last - key), key,
                          c->cost, c->decision.limit);

        } else {
            ngx_log_error(lrcf->log_level, r->connection->log, 0,
                          "limiting requests%s by zone \"%V\", key \"%*s\", "
                          "cost %uL, retry after %uL ms",
                          lrcf->dry_run ? ", dry run," : "",
                          &c->zone->name, (size_t) (last - key), key,
                          c->cost, c->decision.retry_after_ms);
        }

        if (!lrcf->dry_run) {
            if (lrcf->headers) {
                if (ngx_http_ratelimit_add_headers(r, lrcf->headers,
                                                   &c->decision)
                    != NGX_OK)
                {
                    return NGX_HTTP_INTERNAL_SERVER_ERROR;
                }
            }

            return ngx_http_ratelimit_send_denial(r, lrcf->status,
                                                  &c->decision);
        }
    }

    if (shown >= 0 && lrcf->headers) {
        /* Served: shown as what it is (a dry run's denial gets no Retry-After). */
        d = ctx->checks[shown].decision;
        d.allowed = 1;

        if (ngx_http_ratelimit_add_headers(r, lrcf->headers, &d) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return NGX_DECLINED;
}


/* Adds the lines of rl_format_headers() ("Name: value\r\n" each). */
static ngx_int_t
ngx_http_ratelimit_add_headers(ngx_http_request_t *r, ngx_uint_t flags,
    const rl_decision *d)
{
    char              text[512];
    u_char           *p, *end, *colon, *eol;
    int64_t           len;
    ngx_table_elt_t  *h;

    len = rl_format_headers(d, (uint32_t) flags, text, sizeof(text));
    if (len < 0 || (size_t) len >= sizeof(text)) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ratelimit: rl_format_headers() failed: %s",
                      rl_last_error());
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, (size_t) len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, text, (size_t) len);
    end = p + len;

    while (p < end) {
        eol = ngx_strlchr(p, end, '\r');
        colon = ngx_strlchr(p, end, ':');

        if (eol == NULL || colon == NULL || colon > eol || colon + 2 > eol) {
            return NGX_ERROR;
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
        h->key.data = p;
        h->key.len = colon - p;
        h->value.data = colon + 2;
        h->value.len = eol - (colon + 2);

        p = eol + 2;
    }

    return NGX_OK;
}


/* The denial: `status`, a JSON body; the request ends here. */
static ngx_int_t
ngx_http_ratelimit_send_denial(ngx_http_request_t *r, ngx_uint_t status,
    const rl_decision *d)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    b = ngx_create_temp_buf(r->pool, sizeof("{\"error\":\"rate_limited\","
                                            "\"retry_after_ms\":}")
                                     + NGX_INT64_LEN);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_sprintf(b->last,
                          "{\"error\":\"rate_limited\",\"retry_after_ms\":%uL}",
                          d->retry_after_ms);
    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    out.buf = b;
    out.next = NULL;

    ngx_http_finalize_request(r, ngx_http_output_filter(r, &out));
    return NGX_DONE;
}


/* The request's context, also after an internal redirect cleared r->ctx. */
static ngx_http_ratelimit_ctx_t *
ngx_http_ratelimit_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t        *cln;
    ngx_http_ratelimit_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ratelimit_module);
    if (ctx != NULL) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_ratelimit_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_ratelimit_module);
            return ctx;
        }
    }

    return NULL;
}


static void
ngx_http_ratelimit_cleanup(void *data)
{
    /* Nothing to free: it only marks the context (see get_ctx). */
}


#if (NGX_THREADS)

static void
ngx_http_ratelimit_thread(void *data, ngx_log_t *log)
{
    ngx_http_ratelimit_run(*(ngx_http_ratelimit_ctx_t **) data);
}


static void
ngx_http_ratelimit_thread_done(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_ratelimit_ctx_t  *ctx;

    r = ev->data;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    r->main->blocked--;
    r->aio = 0;

    ctx = ngx_http_ratelimit_get_ctx(r);
    if (ctx != NULL) {
        ctx->state = NGX_HTTP_RATELIMIT_DECIDED;
    }

    if (r->done) {
        c->write->handler(c->write);

    } else {
        r->write_event_handler(r);
        ngx_http_run_posted_requests(c);
    }
}

#endif


/* ---- configuration ---------------------------------------------------- */

static ngx_uint_t
ngx_http_ratelimit_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}


/* Whether a POSIX shm object `name` exists (to leave `nginx -t` traceless). */
static ngx_uint_t
ngx_http_ratelimit_shm_exists(const char *name)
{
    int  fd;

    fd = shm_open(name, O_RDONLY, 0);
    if (fd >= 0) {
        close(fd);
        return 1;
    }

    return errno != ENOENT;
}


static void
ngx_http_ratelimit_destroy_zone(void *data)
{
    ngx_http_ratelimit_zone_t  *zone = data;

    rl_destroy(zone->lim);
    zone->lim = NULL;
}


/* Whether the text `desc` has the token `tok` (e.g. "backend=redis"). */
static ngx_uint_t
ngx_http_ratelimit_has_token(const char *desc, const char *tok)
{
    size_t       n;
    const char  *p;

    n = ngx_strlen(tok);

    for (p = desc; (p = ngx_strstr(p, tok)) != NULL; p += n) {
        if ((p == desc || ngx_http_ratelimit_blank(p[-1]))
            && (ngx_http_ratelimit_blank(p[n]) || p[n] == '\0'))
        {
            return 1;
        }
    }

    return 0;
}


/* The value of the token `name=` in `desc` (NULL if absent), copied. */
static char *
ngx_http_ratelimit_token_value(ngx_pool_t *pool, const char *desc,
    const char *name)
{
    size_t       n, len;
    char        *v;
    const char  *p, *end;

    n = ngx_strlen(name);

    for (p = desc; (p = ngx_strstr(p, name)) != NULL; p += n) {
        if ((p == desc || ngx_http_ratelimit_blank(p[-1])) && p[n] == '=') {
            p += n + 1;
            for (end = p; *end != '\0' && !ngx_http_ratelimit_blank(*end);
                 end++)
            { /* void */ }
            len = (size_t) (end - p);
            v = ngx_pnalloc(pool, len + 1);
            if (v == NULL) {
                return NULL;
            }
            ngx_cpystrn((u_char *) v, (u_char *) p, len + 1);
            return v;
        }
    }

    return NULL;
}


static char *
ngx_http_ratelimit_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_main_conf_t  *rmcf = conf;

    int                          st;
    char                        *config, *desc, *name;
    int64_t                      len;
    ngx_str_t                   *value;
    ngx_uint_t                   i, shm, existed;
    ngx_pool_cleanup_t          *cln;
    ngx_http_ratelimit_zone_t   *zone, **zones, **slot;

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "has an empty zone name";
    }

    zones = rmcf->zones.elts;

    for (i = 0; i < rmcf->zones.nelts; i++) {
        if (zones[i]->name.len == value[1].len
            && ngx_strncmp(zones[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate ratelimit zone \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_strlen(value[2].data) != value[2].len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ratelimit zone \"%V\": the configuration holds "
                           "a NUL byte", &value[1]);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->name = value[1];
    zone->shm_name = NULL;
    config = (char *) value[2].data;   /* NUL-terminated by the parser */

    /*
     * `nginx -t` only validates: it leaves no region behind that it made,
     * and touches none that a running nginx uses.
     */
    shm = ngx_http_ratelimit_has_token(config, "backend=shm");
    name = shm ? ngx_http_ratelimit_token_value(cf->pool, config, "name")
               : NULL;
    existed = name != NULL && ngx_http_ratelimit_shm_exists(name);

    st = rl_create(config, &zone->lim);

    if (st == RL_ERR_INCOMPATIBLE && ngx_test_config) {
        /* A reload with this configuration makes the region afresh. */
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "ratelimit zone \"%V\": %s; a reload or restart "
                           "with this configuration makes it afresh",
                           &value[1], rl_last_error());
        zone->lim = NULL;
        st = RL_OK;

    } else if (st == RL_ERR_INCOMPATIBLE && name != NULL) {
        for (i = 0; i < rmcf->zones.nelts; i++) {
            if (zones[i]->shm_name != NULL
                && ngx_strcmp(zones[i]->shm_name, name) == 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "ratelimit zone \"%V\": zone \"%V\" "
                                   "uses the region name=%s with another "
                                   "configuration", &value[1],
                                   &zones[i]->name, name);
                return NGX_CONF_ERROR;
            }
        }

        /*
         * An shm region of that name made with another configuration: the
         * new one takes effect, starting afresh (workers of the old
         * configuration keep the old region until they exit).
         */
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "ratelimit zone \"%V\": %s; the region is made "
                           "afresh with the new configuration",
                           &value[1], rl_last_error());

        if (rl_shm_unlink(name) != RL_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "ratelimit zone \"%V\": removing the old "
                               "region failed: %s", &value[1],
                               rl_last_error());
            return NGX_CONF_ERROR;
        }

        st = rl_create(config, &zone->lim);
    }

    if (st != RL_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "ratelimit zone \"%V\": %s: %s", &value[1],
                           rl_strerror(st), rl_last_error());
        return NGX_CONF_ERROR;
    }

    if (zone->lim != NULL && ngx_test_config) {
        rl_destroy(zone->lim);
        zone->lim = NULL;

        if (shm && !existed) {
            (void) rl_shm_unlink(name);
        }
    }

    if (zone->lim != NULL) {
        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            rl_destroy(zone->lim);
            return NGX_CONF_ERROR;
        }

        cln->handler = ngx_http_ratelimit_destroy_zone;
        cln->data = zone;

        len = rl_describe(zone->lim, NULL, 0);
        if (len < 0) {
            return NGX_CONF_ERROR;
        }

        desc = ngx_pnalloc(cf->pool, (size_t) len + 1);
        if (desc == NULL) {
            return NGX_CONF_ERROR;
        }

        (void) rl_describe(zone->lim, desc, (size_t) len + 1);

        zone->redis = ngx_http_ratelimit_has_token(desc, "backend=redis");
        zone->memory = ngx_http_ratelimit_has_token(desc, "backend=memory");
        zone->deny_on_error = ngx_http_ratelimit_has_token(desc,
                                                           "on_error=deny");

        if (zone->redis) {
#if (NGX_THREADS)
            if (rmcf->pool == NULL) {
                rmcf->pool = ngx_thread_pool_add(cf, NULL);
                if (rmcf->pool == NULL) {
                    return NGX_CONF_ERROR;
                }
            }
#else
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "ratelimit zone \"%V\": backend=redis needs "
                               "nginx built --with-threads", &value[1]);
            return NGX_CONF_ERROR;
#endif
        }
    }

    zone->shm_name = name;

    slot = ngx_array_push(&rmcf->zones);
    if (slot == NULL) {
        return NGX_CONF_ERROR;
    }

    *slot = zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_ratelimit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_loc_conf_t  *lrcf = conf;

    ngx_str_t                          *value, s;
    ngx_uint_t                          i, k;
    ngx_http_ratelimit_limit_t         *limit;
    ngx_http_ratelimit_zone_t         **zones, *zone;
    ngx_http_ratelimit_main_conf_t     *rmcf;
    ngx_http_compile_complex_value_t    ccv;
    ngx_str_t                           key, cost;

    value = cf->args->elts;
    zone = NULL;
    ngx_str_null(&key);
    ngx_str_null(&cost);

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ratelimit_module);

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;
            zones = rmcf->zones.elts;

            for (k = 0; k < rmcf->zones.nelts; k++) {
                if (zones[k]->name.len == s.len
                    && ngx_strncmp(zones[k]->name.data, s.data, s.len) == 0)
                {
                    zone = zones[k];
                }
            }

            if (zone == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "unknown ratelimit zone \"%V\" (a "
                                   "ratelimit_zone must come first)", &s);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            key.data = value[i].data + 4;
            key.len = value[i].len - 4;
            continue;
        }

        if (ngx_strncmp(value[i].data, "cost=", 5) == 0) {
            cost.data = value[i].data + 5;
            cost.len = value[i].len - 5;
            if (cost.len == 0) {
                return "has an empty cost=";
            }
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (zone == NULL) {
        return "needs zone=";
    }

    if (key.data == NULL) {
        return "needs key=";
    }

    if (lrcf->limits == NULL) {
        lrcf->limits = ngx_array_create(cf->pool, 1,
                                        sizeof(ngx_http_ratelimit_limit_t));
        if (lrcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    limit = ngx_array_push(lrcf->limits);
    if (limit == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(limit, sizeof(ngx_http_ratelimit_limit_t));
    limit->zone = zone;

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &key;
    ccv.complex_value = &limit->key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (cost.data != NULL) {
        limit->cost = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
        if (limit->cost == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &cost;
        ccv.complex_value = limit->cost;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (zone->redis) {
        lrcf->redis = 1;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ratelimit_headers(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ratelimit_loc_conf_t  *lrcf = conf;

    ngx_str_t  *value;

    if (lrcf->headers != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "legacy") == 0) {
        lrcf->headers = RL_HEADERS_LEGACY | RL_HEADERS_RETRY_AFTER;

    } else if (ngx_strcmp(value[1].data, "ietf") == 0) {
        lrcf->headers = RL_HEADERS_IETF | RL_HEADERS_RETRY_AFTER;

    } else if (ngx_strcmp(value[1].data, "both") == 0) {
        lrcf->headers = RL_HEADERS_LEGACY | RL_HEADERS_IETF
                        | RL_HEADERS_RETRY_AFTER;

    } else if (ngx_strcmp(value[1].data, "off") == 0) {
        lrcf->headers = 0;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\": legacy, ietf, both or off",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_ratelimit_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ratelimit_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&rmcf->zones, cf->pool, 4,
                       sizeof(ngx_http_ratelimit_zone_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return rmcf;
}


static void *
ngx_http_ratelimit_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ratelimit_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ratelimit_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->limits = NULL;
     *     conf->redis = 0;
     */

    conf->status = NGX_CONF_UNSET_UINT;
    conf->headers = NGX_CONF_UNSET_UINT;
    conf->dry_run = NGX_CONF_UNSET;
    conf->log_level = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_ratelimit_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ratelimit_loc_conf_t  *prev = parent;
    ngx_http_ratelimit_loc_conf_t  *conf = child;

    if (conf->limits == NULL) {
        conf->limits = prev->limits;
        conf->redis = prev->redis;
    }

    ngx_conf_merge_uint_value(conf->status, prev->status,
                              NGX_HTTP_TOO_MANY_REQUESTS);
    ngx_conf_merge_uint_value(conf->headers, prev->headers,
                              RL_HEADERS_LEGACY | RL_HEADERS_RETRY_AFTER);
    ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_ERR);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ratelimit_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ratelimit_handler;

    return NGX_OK;
}


/* A memory zone counts in each worker alone: say so when there are several. */
static ngx_int_t
ngx_http_ratelimit_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i;
    ngx_core_conf_t                 *ccf;
    ngx_http_ratelimit_zone_t      **zones;
    ngx_http_ratelimit_main_conf_t  *rmcf;

    if (ngx_http_cycle_get_module_main_conf(cycle, ngx_http_core_module)
        == NULL)
    {
        return NGX_OK;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_ratelimit_module);
    if (rmcf == NULL) {
        return NGX_OK;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);
    zones = rmcf->zones.elts;

    for (i = 0; i < rmcf->zones.nelts; i++) {
        if (zones[i]->memory && ccf->worker_processes > 1) {
            ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                          "ratelimit zone \"%V\" is backend=memory: each of "
                          "the %i workers counts its own requests (use "
                          "backend=shm to share them)", &zones[i]->name,
                          ccf->worker_processes);
        }
    }

    return NGX_OK;
}

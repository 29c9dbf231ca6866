/**
 * Requests to the server extension (`<base_url>api_extension/...`) through Jupyter's
 * ServerConnection, so the auth token and XSRF header go with them.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { loadBundle, TranslationBundle } from './i18n';

/** An answer that is not a success. `serverDown`: nothing (or a proxy) answered. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    readonly serverDown: boolean,
    readonly body: Record<string, unknown> | null = null
  ) {
    super(detail || code);
    this.name = 'ApiError';
  }
}

/** Statuses a proxy or gateway answers while the notebook server behind it is gone. */
const GATEWAY_STATUSES = new Set([502, 503, 504]);

export interface IRequestOptions {
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE';
  body?: unknown;
  timeoutMs?: number;
}

export class ApiClient {
  constructor(
    private readonly _settings: ServerConnection.ISettings = ServerConnection.makeSettings(),
    /** For the errors' `detail`, which the user reads in notifications. */
    private readonly _trans: TranslationBundle = loadBundle(null)
  ) {}

  /** The URL of an endpoint, e.g. `url('classify')`. */
  url(path = ''): string {
    return URLExt.join(this._settings.baseUrl, 'api_extension', path);
  }

  /** JSON of the answer (null for 204); ApiError otherwise. */
  async request<T>(path: string, options: IRequestOptions = {}): Promise<T> {
    const controller = new AbortController();
    const timer =
      options.timeoutMs !== undefined
        ? setTimeout(() => controller.abort(), options.timeoutMs)
        : null;
    const init: RequestInit = {
      method: options.method ?? 'GET',
      signal: controller.signal,
      cache: 'no-store'
    };
    if (options.body !== undefined) {
      init.body = JSON.stringify(options.body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(this.url(path), init, this._settings);
    } catch (error) {
      const timedOut = controller.signal.aborted;
      throw new ApiError(
        0,
        timedOut ? 'timeout' : 'network',
        timedOut
          ? this._trans.__('no answer from the notebook server within %1 ms', options.timeoutMs)
          : this._trans.__('the notebook server is not answering'),
        true
      );
    } finally {
      if (timer !== null) {
        clearTimeout(timer);
      }
    }
    return parseResponse<T>(response, this._trans);
  }

  get<T>(path = '', timeoutMs = 10000): Promise<T> {
    return this.request<T>(path, { timeoutMs });
  }

  post<T>(path: string, body: unknown, timeoutMs = 30000): Promise<T> {
    return this.request<T>(path, { method: 'POST', body, timeoutMs });
  }

  put<T>(path: string, body: unknown, timeoutMs = 10000): Promise<T> {
    return this.request<T>(path, { method: 'PUT', body, timeoutMs });
  }

  delete<T>(path: string, timeoutMs = 30000): Promise<T> {
    return this.request<T>(path, { method: 'DELETE', timeoutMs });
  }
}

async function parseResponse<T>(response: Response, trans: TranslationBundle): Promise<T> {
  const text = await response.text().catch(() => '');
  let data: unknown = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.ok) {
    return data as T;
  }
  const body = data !== null && typeof data === 'object' ? (data as Record<string, unknown>) : null;
  if (body && typeof body.error === 'string') {
    // Our extension answered: the server is up, the request was refused.
    // `detail` is the reason as text; where it carries structured data (409
    // image_unmapped: the image and profile), `message` is the text.
    const text =
      typeof body.detail === 'string'
        ? body.detail
        : typeof body.message === 'string'
          ? body.message
          : body.error;
    return Promise.reject(new ApiError(response.status, body.error, text, false, body));
  }
  const down = GATEWAY_STATUSES.has(response.status);
  return Promise.reject(
    new ApiError(
      response.status,
      `http-${response.status}`,
      trans.__('the notebook server answered %1 %2', response.status, response.statusText).trim(),
      down
    )
  );
}

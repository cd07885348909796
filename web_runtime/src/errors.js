// Typed errors of the browser engine. Classes are chosen by what the caller does next (fix the request,
// pick another model variant, switch browser, reload), and carry the same `code` strings as the REST API,
// so a page can branch on `err.code` whichever engine host (in-page, Worker) threw it.

/**
 * @typedef {object} ErrorOptions
 * @property {string | null} [param]  request field at fault, as in OpenAI's error envelope
 * @property {string | null} [tip]    the next action, for the user
 * @property {unknown} [cause]        the underlying error
 * @property {Record<string, unknown>} [data]  extra facts for programs (model ids, limits)
 */

/** Base of every error the runtime throws on purpose; `message` is written for the user. */
export class WebbuildError extends Error {
  /** @type {string} */ static code = "internal_error";
  /** @type {string} */ static type = "server_error";
  /** @type {number} */ static status = 500;

  /**
   * @param {string} message
   * @param {ErrorOptions} [options]
   */
  constructor(message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    const cls = /** @type {typeof WebbuildError} */ (this.constructor);
    this.name = cls.name;
    /** @type {string} */ this.code = cls.code;
    /** @type {string} */ this.type = cls.type;
    /** @type {number} */ this.status = cls.status;
    /** @type {string | null} */ this.param = options.param ?? null;
    /** @type {string | null} */ this.tip = options.tip ?? null;
    /** @type {Record<string, unknown>} */ this.data = options.data ?? {};
  }

  /** The OpenAI error envelope body, as the REST API returns it. */
  toJSON() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** The request is malformed or out of range: fix the named `param`. */
export class InvalidRequestError extends WebbuildError {
  static code = "invalid_request";
  static type = "invalid_request_error";
  static status = 400;
}

/** The request uses a field this engine does not implement yet (tools, n > 1, logprobs ...). */
export class UnsupportedParameterError extends InvalidRequestError {
  static code = "unsupported_parameter";
}

/** Prompt plus requested tokens do not fit the model's context window: shorten the conversation. */
export class ContextLengthExceededError extends InvalidRequestError {
  static code = "context_length_exceeded";
}

/** The request names a model the site does not carry. */
export class ModelNotFoundError extends WebbuildError {
  static code = "model_not_found";
  static type = "invalid_request_error";
  static status = 404;
}

/** A completion was requested before `reload()` finished (or after a failure unloaded the model). */
export class ModelNotLoadedError extends WebbuildError {
  static code = "model_not_loaded";
  static type = "invalid_request_error";
  static status = 503;
}

/** The browser has no usable WebGPU adapter: switch browser or enable WebGPU. */
export class WebGPUUnavailableError extends WebbuildError {
  static code = "webgpu_unavailable";
  static status = 503;
}

/**
 * The model's kernels use f16 but the adapter lacks `shader-f16`. Such kernels would not fail loudly (they
 * return zeros), so the runtime refuses and names the f32 variant to load instead (`data.f32_variant`).
 */
export class ShaderF16UnsupportedError extends WebGPUUnavailableError {
  static code = "shader_f16_unsupported";

  /**
   * @param {string} modelId  the f16 model that was asked for
   * @param {string} f32Variant  the variant that runs without shader-f16
   * @param {boolean} inBundle  whether this site carries that variant
   */
  static forModel(modelId, f32Variant, inBundle) {
    const tip = inBundle
      ? `Load "${f32Variant}" instead (this site carries it).`
      : `Build the f32 variant with \`webbuild package <model> --quantization ${f32Variant.split("-").pop()}\`.`;
    return new ShaderF16UnsupportedError(
      `This GPU adapter does not support shader-f16, which model "${modelId}" needs; ` +
        `use the f32 variant "${f32Variant}".`,
      { tip, data: { model: modelId, f32_variant: f32Variant, in_bundle: inBundle } },
    );
  }
}

/** The WebGPU device was lost (driver reset, tab backgrounded for long, out of memory): reload the model. */
export class DeviceLostError extends WebbuildError {
  static code = "device_lost";
  static status = 503;
}

/** Fetching or initialising the model library, weights or configs failed. */
export class ModelLoadError extends WebbuildError {
  static code = "model_load_failed";
  static status = 503;
}

/** A downloaded file does not match the sha256 the manifest lists (stale cache or damaged transfer). */
export class IntegrityError extends ModelLoadError {
  static code = "integrity_check_failed";
}

/** The request was cancelled (`interrupt()`, AbortSignal, or the consumer stopped reading the stream). */
export class AbortError extends WebbuildError {
  static code = "request_aborted";
  static type = "invalid_request_error";
  static status = 499;
}

/** Every class the protocol can rebuild on the other side, by `name`. */
export const ERROR_CLASSES = Object.freeze(
  Object.fromEntries(
    [
      WebbuildError,
      InvalidRequestError,
      UnsupportedParameterError,
      ContextLengthExceededError,
      ModelNotFoundError,
      ModelNotLoadedError,
      WebGPUUnavailableError,
      ShaderF16UnsupportedError,
      DeviceLostError,
      ModelLoadError,
      IntegrityError,
      AbortError,
    ].map((cls) => [cls.name, cls]),
  ),
);

/**
 * Any thrown value as a WebbuildError: ours pass through, others become the base class (internal_error)
 * with the original kept as `cause`.
 * @param {unknown} err
 * @returns {WebbuildError}
 */
export function asWebbuildError(err) {
  if (err instanceof WebbuildError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new WebbuildError(message || "Unknown error", { cause: err });
}

/**
 * A move to a GPU profile that has no image pair for the notebook's current image: the
 * sidecar answers 409 `image_unmapped` (passed on by POST /migrate) instead of moving, so
 * that the user decides whether to move with the CPU image (GPU libraries may be missing
 * from it). Pure: the decision and the words; the dialog is in service.ts.
 */
import { TranslationBundle } from './i18n';

export interface IUnmappedImage {
  /** The notebook's current image. */
  image: string;
  /** The GPU profile asked for (may be empty when the server did not say). */
  profile: string;
}

/** What an error answer of POST /migrate looks like to this module. */
export interface IRefusal {
  status: number;
  code: string;
  body: Record<string, unknown> | null;
}

/**
 * The unmapped image of a refused move; null for any other answer, for a repeat that
 * already asked to keep the image, and where the admin does not let users keep it
 * (`keep_allowed: false`, `unmapped_image: refuse`): then the refusal stands and says why.
 * The image and profile come in `detail` (`{"error", "message", "detail": {image,
 * profile}}`) or beside it (`{"error", "detail": "<why>", "image", "profile"}`).
 */
export function unmappedImageOf(
  refusal: IRefusal,
  request: Record<string, unknown>
): IUnmappedImage | null {
  if (refusal.status !== 409 || refusal.code !== 'image_unmapped' || request.keep_image === true) {
    return null;
  }
  const body = refusal.body ?? {};
  if (body.keep_allowed === false) {
    return null;
  }
  const detail = body.detail;
  const fields =
    detail !== null && typeof detail === 'object' ? (detail as Record<string, unknown>) : body;
  const text = (value: unknown) => (typeof value === 'string' ? value : '');
  return { image: text(fields.image), profile: text(fields.profile) };
}

/** The same move request, keeping the current image. */
export function keepImageRequest<T extends Record<string, unknown>>(
  request: T
): T & { keep_image: true } {
  return { ...request, keep_image: true };
}

/** The question and the buttons of the dialog. */
export function unmappedImageQuestion(
  trans: TranslationBundle,
  unmapped: IUnmappedImage
): { title: string; body: string; cancel: string; accept: string } {
  const image = unmapped.image || trans.__('this notebook\'s image');
  return {
    title: trans.__('No GPU image for this notebook'),
    body: trans.__(
      'No GPU image is configured for %1. Move anyway, keeping this image? GPU libraries may be missing.',
      image
    ),
    cancel: trans.__('Cancel'),
    accept: trans.__('Move anyway')
  };
}

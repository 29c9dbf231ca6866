import { trans } from './trans';
import { keepImageRequest, unmappedImageOf, unmappedImageQuestion } from '../src/unmappedImage';

const request = { target: 'gpu', reason: 'manual', kernel_id: 'k1', path: 'a.ipynb' };
const refusal = {
  status: 409,
  code: 'image_unmapped',
  body: {
    error: 'image_unmapped',
    message: 'no GPU image for jupyter-scipy:v1',
    detail: { image: 'registry/jupyter-scipy:v1', profile: 'a100-1' }
  }
};

describe('a move to a GPU profile with no image for the current image', () => {
  it('asks the user, naming the image', () => {
    const unmapped = unmappedImageOf(refusal, request);
    expect(unmapped).toEqual({ image: 'registry/jupyter-scipy:v1', profile: 'a100-1' });
    const words = unmappedImageQuestion(trans, unmapped!);
    expect(words.body).toBe(
      'No GPU image is configured for registry/jupyter-scipy:v1. Move anyway, keeping this image? GPU libraries may be missing.'
    );
    expect([words.cancel, words.accept]).toEqual(['Cancel', 'Move anyway']);
  });
  it('"Move anyway" re-posts the same request keeping the image', () => {
    expect(keepImageRequest(request)).toEqual({ ...request, keep_image: true });
  });
  it('does not ask again when the request kept the image already', () => {
    expect(unmappedImageOf(refusal, keepImageRequest(request))).toBeNull();
  });
  it('reads the image beside a text detail too, and keeps a refusal the admin made final', () => {
    const flat = {
      status: 409,
      code: 'image_unmapped',
      body: {
        error: 'image_unmapped',
        detail: 'the image has no CUDA pair',
        image: 'registry/r:v2',
        profile: 't4-1',
        keep_allowed: true
      }
    };
    expect(unmappedImageOf(flat, request)).toEqual({ image: 'registry/r:v2', profile: 't4-1' });
    expect(unmappedImageOf({ ...flat, body: { ...flat.body, keep_allowed: false } }, request)).toBeNull();
  });
  it('leaves other refusals alone', () => {
    expect(unmappedImageOf({ ...refusal, code: 'quota_exceeded' }, request)).toBeNull();
    expect(unmappedImageOf({ ...refusal, status: 400 }, request)).toBeNull();
    expect(unmappedImageOf({ status: 409, code: 'image_unmapped', body: null }, request)).toEqual({
      image: '',
      profile: ''
    });
  });
});

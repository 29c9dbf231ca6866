/**
 * The user's background-checkpoint setting (pure): the two settings of the `manual`
 * plugin ("Save variables in the background", "… at most every N seconds") and what the
 * server is sent for them (`PUT api_extension/background`). The server keeps it in memory
 * only, so the plugin sends it on activation, on every change and to each new server.
 */

/** The user's setting, as the settings registry holds it. */
export interface IBackgroundSetting {
  /** false: no background checkpoints for this user. */
  enabled: boolean;
  /** At most every so many seconds; null: as often as the admin allows. */
  seconds: number | null;
}

export const BACKGROUND_KEYS = {
  enabled: 'backgroundCheckpoints',
  seconds: 'backgroundCheckpointSeconds'
} as const;

/** The server refuses anything above a day. */
export const MAX_INTERVAL_SECONDS = 86400;

export const DEFAULT_BACKGROUND: IBackgroundSetting = { enabled: true, seconds: null };

/** The setting from the registry's composite; anything unusable is the default. */
export function readBackgroundSetting(composite: Partial<Record<string, unknown>>): IBackgroundSetting {
  const enabled = composite[BACKGROUND_KEYS.enabled];
  const seconds = composite[BACKGROUND_KEYS.seconds];
  return {
    enabled: typeof enabled === 'boolean' ? enabled : DEFAULT_BACKGROUND.enabled,
    seconds:
      typeof seconds === 'number' && Number.isFinite(seconds) && seconds > 0
        ? Math.min(seconds, MAX_INTERVAL_SECONDS)
        : null
  };
}

/** The body of `PUT api_extension/background`: off → 0; on → the seconds, or null (the
 * admin's and the server's interval). */
export function backgroundBody(setting: IBackgroundSetting): { interval_seconds: number | null } {
  return { interval_seconds: setting.enabled ? setting.seconds : 0 };
}

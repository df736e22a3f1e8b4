// Known custom status sequences: when an orchestrator's custom status is a
// string from one of these lists, the detail view shows a progress bar.
// Add your orchestrators here.
export const SEQUENCES = {
  E1_HelloSequence: ['Tokyo', 'Seattle', 'London'],
};

// Orchestrators offered by the start form (the devserver's samples).
export const KNOWN_ORCHESTRATORS = {
  E1_HelloSequence: 'says hello to Tokyo, Seattle and London; input: none',
  CityRecommender: 'input 1, 2 or 3; waits for the CitySelected event',
  ReserveTicket: 'input "user" or {"userId","discountTimeout"}; waits for BookingConfirmed',
  SetStatusTest: 'sets a status, waits on a timer (input: seconds), runs an activity',
};

/**
 * Progress of an instance through a known sequence, or null when there is
 * none: {steps, step (0..steps.length), current}.
 */
export function progressFor(name, customStatus) {
  let steps = SEQUENCES[name];
  if (!steps && typeof customStatus === 'string') {
    steps = Object.values(SEQUENCES).find((s) => s.includes(customStatus));
  }
  if (!steps) return null;
  let step = 0;
  if (typeof customStatus === 'string') {
    const i = steps.indexOf(customStatus);
    if (i < 0) return null;
    step = i + 1;
  } else if (customStatus !== null && customStatus !== undefined) {
    return null;
  }
  return { steps, step, current: step > 0 ? steps[step - 1] : null };
}

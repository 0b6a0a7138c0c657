/** A model or adapter that cannot be converted, with the reason (file, key or tensor named). */
export class IntakeError extends Error {}

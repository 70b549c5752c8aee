import { createContext } from "react";

/** Client-side navigation (history.pushState), provided by App. */
export const NavContext = createContext<(to: string) => void>(() => {});

export type NoticeKind = "info" | "error";

/** Shows a short message at the bottom of the page, provided by App. */
export const NoticeContext = createContext<(text: string, kind: NoticeKind) => void>(() => {});
